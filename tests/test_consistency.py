"""Round-trip refinement (icsg.generation.consistency) with a stand-in encoder whose codes are a fixed
random projection of the [M, C] input: the search must find the crystal the target code came from."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.generation.consistency import Sites, refine_sites

from icsg.generation.search_config import ConsistencyConfig
from icsg.grid import GridSpec
from icsg.representation.density import encode, sites_density, vae_input

SPEC = GridSpec(size=16)
SCAN = ConsistencyConfig(cell_span=0.06, axis_span=0.02)  # with the cell scan (off by default)
CLASSES = np.array([0, 8, 9, 22, 38, 40, 56])  # background, O, F, Ti, Sr, Zr, Ba


class _ProjectionEncoder:
    """predict([x, cond]) -> (x·W, 0): distances between codes follow distances between maps."""

    def __init__(self, dim: int = 48, seed: int = 0):
        n = SPEC.size**3 * 4
        self.w = np.random.default_rng(seed).normal(size=(n, dim)) / np.sqrt(dim)
        self.calls = 0

    def predict(self, inputs, verbose=0, batch_size=None):
        x, _ = inputs
        self.calls += 1
        mu = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.w
        return mu, np.zeros_like(mu)


class _FakeVAE:
    def __init__(self):
        self.encoder = _ProjectionEncoder()


def _perovskite(a: float = 3.9, a_site: str = "Sr", b_site: str = "Ti") -> Structure:
    return Structure(Lattice.cubic(a), [a_site, b_site, "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _sites_of(s: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    abc = np.array(s.lattice.abc)
    return abc, np.array([site.specie.Z for site in s]), SPEC.cartesian_to_index(s.cart_coords, abc)


def _code(vae, s: Structure) -> np.ndarray:
    e = encode(s, SPEC)
    x = vae_input(e.density[None], e.abc_A[None], SPEC)
    return vae.encoder.predict([x, np.zeros((1, 10), np.float32)])[0]


def _log_probs(z_sites, favour: dict) -> np.ndarray:
    """Flat class log-probabilities with a few elements made likely per site: {site: [Z, ...]}."""
    lp = np.full((len(z_sites), len(CLASSES)), np.log(0.01))
    for k, zs in favour.items():
        for z in zs:
            lp[k, list(CLASSES).index(z)] = np.log(0.3)
    return lp


def test_sites_density_is_the_encoders_density():
    s = _perovskite(3.95)
    abc, z, vox = _sites_of(s)
    np.testing.assert_allclose(sites_density(z, vox, abc, SPEC), encode(s, SPEC).density, atol=1e-6)


def test_refinement_finds_the_elements_and_cell_of_the_target_code():
    vae = _FakeVAE()
    truth = _perovskite(3.9, "Sr", "Ti")
    target = _code(vae, truth)
    abc, z, vox = _sites_of(truth)
    # read wrongly: Ba for Sr, F for one O, a cell 3 % too long
    start = Sites(abc * 1.03, np.array([56, 22, 9, 8, 8]), vox,
                  _log_probs(z, {0: [38, 56, 40], 1: [22, 40], 2: [8, 9], 3: [8, 9], 4: [8, 9]}))
    cfg = ConsistencyConfig(top_k=3, rounds=4, cell_span=0.06, axis_span=0.02)
    out = refine_sites(vae, [start], target, np.zeros((1, 10)), CLASSES, SPEC, cfg)
    assert out[0] is start
    assert start.z.tolist() == [38, 22, 8, 8, 8]
    assert np.abs(start.abc_A - 3.9).max() < 0.02
    assert start.residual < 1e-4 and start.moves >= 3


def test_refinement_never_increases_the_distance_and_skips_missing_maps():
    vae = _FakeVAE()
    truth = _perovskite(4.0, "Ba", "Zr")
    abc, z, vox = _sites_of(truth)
    target = _code(vae, truth)
    exact = Sites(abc.copy(), z.copy(), vox, _log_probs(z, {0: [38, 56], 1: [22, 40]}))
    first = ConsistencyConfig(rounds=1, species_passes=0, cell_span=0.0, axis_span=0.0)
    d0 = refine_sites(vae, [None, exact], np.vstack([target, target]), np.zeros((2, 10)), CLASSES, SPEC, first)
    assert d0[0] is None and exact.residual == pytest.approx(0.0, abs=1e-10)
    out = refine_sites(vae, [exact], target, np.zeros((1, 10)), CLASSES, SPEC, SCAN)
    assert out[0].z.tolist() == z.tolist() and np.allclose(out[0].abc_A, abc) and out[0].moves == 0


def test_without_class_probabilities_the_elements_stay_and_the_cell_moves():
    vae = _FakeVAE()
    truth = _perovskite(3.9)
    abc, z, vox = _sites_of(truth)
    s = Sites(abc * 0.97, z.copy(), vox, None)
    refine_sites(vae, [s], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC, SCAN)
    assert s.z.tolist() == z.tolist()
    assert np.abs(s.abc_A - 3.9).max() < 0.01
    s = Sites(abc * 0.97, z.copy(), vox, None)  # by default the cell stays where it was read
    refine_sites(vae, [s], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC)
    assert np.allclose(s.abc_A, abc * 0.97)


def test_refine_checks_its_inputs():
    with pytest.raises(ValueError, match="latent vectors"):
        refine_sites(_FakeVAE(), [None, None], np.zeros((1, 4)), np.zeros((2, 10)), CLASSES, SPEC)
    with pytest.raises(ValueError, match="parabola"):
        ConsistencyConfig(cell_steps=2)
    with pytest.raises(ValueError, match="z_neighbours"):
        ConsistencyConfig(z_neighbours=-1)
    with pytest.raises(ValueError, match="add_margin"):
        ConsistencyConfig(add_margin=1.0)
    for bad in ({"position_steps": -1}, {"position_rounds": -1}, {"position_lr_A": 0.0}):
        with pytest.raises(ValueError, match="position"):
            ConsistencyConfig(**bad)


def test_a_missing_site_is_added_and_an_extra_one_removed():
    vae = _FakeVAE()
    truth = _perovskite(3.9)
    abc, z, vox = _sites_of(truth)
    target = np.vstack([_code(vae, truth)] * 2)
    decoy = np.array([[8.0, 8.0, 4.0]])
    lp_o = _log_probs([0], {0: [8, 9]})
    # site 4 (an O) missing; its position and a decoy are spare maxima
    missing = Sites(abc.copy(), z[:4].copy(), vox[:4], _log_probs(z[:4], {}),
                    np.vstack([decoy, vox[4:5]]), np.vstack([lp_o, lp_o]))
    # one site too many, at the decoy
    extra = Sites(abc.copy(), np.append(z, 22), np.vstack([vox, decoy]), _log_probs(np.append(z, 22), {}),
                  np.zeros((0, 3)), np.zeros((0, len(CLASSES))))
    refine_sites(vae, [missing, extra], target, np.zeros((2, 10)), CLASSES, SPEC, SCAN)
    for s in (missing, extra):
        assert sorted(s.z.tolist()) == sorted(z.tolist()) and s.residual < 1e-4
        assert np.abs(s.abc_A - 3.9).max() < 0.01
        assert np.abs(np.sort(s.centroids_vox, 0) - np.sort(vox, 0)).max() < 1e-9


def test_spare_positions_are_empty_density_maxima_inside_the_cell():
    from icsg.generation.consistency import spare_positions

    truth = _perovskite(3.9)
    abc, z, vox = _sites_of(truth)
    dens = encode(truth, SPEC).density
    assert len(spare_positions(dens, z, vox, abc, SPEC)) == 0  # the sites explain the whole map
    spares = spare_positions(dens, z[:4], vox[:4], abc, SPEC)  # the last O left out
    assert len(spares) == 1 and np.abs(spares[0] - vox[4]).max() <= 0.5


def test_z_neighbours_are_the_elements_beside_z():
    from icsg.generation.consistency import z_neighbours

    elements = np.array([8, 9, 22, 38, 40, 56])
    assert z_neighbours(38, elements, 1) == [22, 40]
    assert z_neighbours(8, elements, 2) == [9, 22]
    assert z_neighbours(56, elements, 0) == []


def test_group_moves_change_every_site_of_an_element_at_once():
    vae = _FakeVAE()
    truth = _perovskite(3.9)
    abc, z, vox = _sites_of(truth)
    one_pass = dict(rounds=1, species_passes=1, z_neighbours=0)

    def start():  # all three O read as F; O is each anion site's second choice
        return Sites(abc.copy(), np.array([38, 22, 9, 9, 9]), vox, _log_probs(z, {2: [9, 8], 3: [9, 8], 4: [9, 8]}))

    grouped = start()
    refine_sites(vae, [grouped], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC, ConsistencyConfig(**one_pass))
    assert grouped.z.tolist() == z.tolist() and grouped.moves == 1
    single = start()  # one site per move: a single pass cannot fix three sites
    refine_sites(vae, [single], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC,
                 ConsistencyConfig(group_moves=False, **one_pass))
    assert single.z.tolist() != z.tolist()


def test_z_neighbours_are_tried_beyond_the_class_ranking():
    vae = _FakeVAE()
    truth = _perovskite(3.9, "Sr", "Ti")
    abc, z, vox = _sites_of(truth)
    # Sr read as Zr, and the class probabilities know nothing of Sr; Sr is Zr's neighbour in CLASSES
    lp = _log_probs(z, {0: [40]})
    for width, expect in ((1, 38), (0, 40)):
        s = Sites(abc.copy(), np.array([40, 22, 8, 8, 8]), vox, lp.copy())
        refine_sites(vae, [s], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC,
                     ConsistencyConfig(top_k=1, z_neighbours=width, group_moves=False, rounds=1))
        assert s.z[0] == expect


def test_an_added_site_must_cut_the_distance_by_the_margin():
    vae = _FakeVAE()
    truth = _perovskite(3.9)
    abc, z, vox = _sites_of(truth)
    lp_o = _log_probs([0], {0: [8, 9]})
    for margin, n_sites in ((0.0, 5), (0.999, 4)):
        s = Sites(abc.copy(), z[:4].copy(), vox[:4], _log_probs(z[:4], {}), vox[4:5].copy(), lp_o)
        refine_sites(vae, [s], _code(vae, truth), np.zeros((1, 10)), CLASSES, SPEC,
                     ConsistencyConfig(add_margin=margin))
        assert len(s.z) == n_sites
