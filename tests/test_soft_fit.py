"""The soft fit (icsg.generation.soft_fit) with a stand-in Keras encoder, a fixed random projection of
[M, C]: gradients reach elements, occupancies, positions and cell through the encoder."""

import dataclasses

import numpy as np
import pytest

from icsg.generation.consistency import Sites
from icsg.generation.soft_fit import position_fit, render_soft, soft_fit
from icsg.grid import GridSpec
from icsg.representation.density import encode, sites_density, vae_input

SPEC = GridSpec(size=16)
CLASSES = np.array([0, 8, 9, 22, 38, 40, 56])  # background, O, F, Ti, Sr, Zr, Ba


class _VAE:
    def __init__(self, dim: int = 64, seed: int = 0):
        import keras

        x = keras.Input((16, 16, 16, 4))
        c = keras.Input((10,))
        w = np.random.default_rng(seed).normal(size=(16**3 * 4, dim)) / np.sqrt(dim)
        dense = keras.layers.Dense(dim, use_bias=False, trainable=False)
        mu = dense(keras.layers.Flatten()(x))
        self.encoder = keras.Model([x, c], [mu, mu])
        dense.set_weights([w.astype(np.float32)])


def _perovskite(a=3.9, a_site="Sr", b_site="Ti"):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(a), [a_site, b_site, "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_render_soft_of_one_hot_sites_is_eq1():
    from keras import ops

    s = _perovskite(3.95)
    abc = np.array(s.lattice.abc)
    z = np.array([site.specie.Z for site in s])
    vox = SPEC.cartesian_to_index(s.cart_coords, abc)
    from icsg.representation.density import _NORM, _radius_of_Z

    r = np.array([_radius_of_Z(int(k)) for k in z])[None, :, None]
    x = render_soft(ops.convert_to_tensor(s.cart_coords[None].astype(np.float32)), ops.ones((1, 5, 1)),
                    ops.ones((1, 5)), ops.convert_to_tensor(abc[None].astype(np.float32)),
                    ops.convert_to_tensor((_NORM * z[None, :, None] / r**3).astype(np.float32)),
                    ops.convert_to_tensor(r.astype(np.float32)), SPEC)
    want = vae_input(sites_density(z, vox, abc, SPEC)[None], abc[None], SPEC)
    np.testing.assert_allclose(ops.convert_to_numpy(x), want, atol=2e-5)


def test_soft_fit_recovers_elements_cell_and_a_missing_site():
    vae = _VAE()
    truth = _perovskite(3.9)
    e = encode(truth, SPEC)
    target = np.asarray(vae.encoder.predict([vae_input(e.density[None], e.abc_A[None], SPEC),
                                             np.zeros((1, 10), np.float32)], verbose=0)[0])
    abc = np.array(truth.lattice.abc)
    vox = SPEC.cartesian_to_index(truth.cart_coords, abc)
    # the segmenter's class probabilities: two candidates per site, the wrong one first at the A site
    lp = np.full((5, len(CLASSES)), np.log(0.01))
    for k, (first, second) in enumerate([(56, 38), (22, 40), (9, 8), (8, 9), (8, 9)]):
        lp[k, list(CLASSES).index(first)], lp[k, list(CLASSES).index(second)] = np.log(0.5), np.log(0.4)
    # read: Ba for Sr, F for an O, the last O missing (a spare position), the cell 2 % long
    start = Sites(abc * 1.02, np.array([56, 22, 9, 8]), vox[:4], lp[:4], vox[4:5], lp[4:5])
    out = soft_fit(vae, [None, start], np.vstack([target, target]), np.zeros((2, 10)), CLASSES, SPEC, steps=150,
                   position_lr_A=0.01, cell_lr=0.002)
    assert out[0] is None and out[1] is not start
    got = out[1]
    assert sorted(got.z.tolist()) == [8, 8, 8, 22, 38]
    assert np.abs(got.abc_A - 3.9).max() < 0.03
    # by default the cell stays as read (it comes from the code's readout)
    kept = soft_fit(vae, [start], target, np.zeros((1, 10)), CLASSES, SPEC, steps=4)[0]
    assert np.allclose(kept.abc_A, start.abc_A)


def test_soft_fit_leaves_crystals_without_class_probabilities():
    s = Sites(np.full(3, 4.0), np.array([8]), np.zeros((1, 3)))
    assert soft_fit(_VAE(), [s], np.zeros((1, 64)), np.zeros((1, 10)), CLASSES, SPEC)[0] is s


def _target(vae, truth):
    e = encode(truth, SPEC)
    return np.asarray(vae.encoder.predict([vae_input(e.density[None], e.abc_A[None], SPEC),
                                           np.zeros((1, 10), np.float32)], verbose=0)[0])


def _displaced(truth, shift_A=0.25, seed=1):
    """The truth's elements and cell, every site moved by ``shift_A`` in a random direction (Å)."""
    abc = np.array(truth.lattice.abc)
    d = np.random.default_rng(seed).normal(size=(len(truth), 3))
    cart = truth.cart_coords + shift_A * d / np.linalg.norm(d, axis=1, keepdims=True)
    return Sites(abc, np.array([site.specie.Z for site in truth]), SPEC.cartesian_to_index(cart, abc)), cart


def test_position_fit_moves_displaced_sites_back():
    vae = _VAE()
    truth = _perovskite(3.9)
    start, cart = _displaced(truth)
    out = position_fit(vae, [None, start], np.vstack([_target(vae, truth)] * 2), np.zeros((2, 10)), SPEC,
                       steps=200, lr_A=0.02)
    assert out[0] is None
    got = out[1]
    assert got.z.tolist() == start.z.tolist() and np.allclose(got.abc_A, start.abc_A)
    err = np.linalg.norm(SPEC.index_to_cartesian(got.centroids_vox, got.abc_A) - truth.cart_coords, axis=1)
    assert np.linalg.norm(cart - truth.cart_coords, axis=1).min() > 0.24 and err.max() < 0.05, err


def test_position_fit_keeps_the_best_positions_seen():
    vae = _VAE()
    truth = _perovskite(3.9)
    start, _ = _displaced(truth, 0.1)
    target = _target(vae, truth)
    d0 = position_fit(vae, [start], target, np.zeros((1, 10)), SPEC, steps=0)  # steps 0: nothing to do
    assert d0[0] is start
    # two crystals of different sizes in one batch (the smaller one padded)
    small = Sites(start.abc_A, start.z[:2], start.centroids_vox[:2])
    both, zz, cc = [start, small], np.vstack([target, target]), np.zeros((2, 10))
    first = [s.residual for s in position_fit(vae, both, zz, cc, SPEC, steps=1, lr_A=1e-9)]
    # steps of 2 Å throw the sites about; what comes back is never farther from z than the start
    wild = position_fit(vae, both, zz, cc, SPEC, steps=5, lr_A=2.0)
    assert [len(s.z) for s in wild] == [5, 2]
    assert wild[0].residual <= first[0] and wild[1].residual <= first[1]


def test_refinement_with_position_rounds_finds_elements_then_positions():
    """Ba read for Sr at displaced sites: the search fixes the element, the position rounds move the sites
    back and the search that follows starts from candidates at the new positions; without them the sites
    stay where they were read."""
    from icsg.generation.search_config import ConsistencyConfig
    from icsg.generation.pipeline import DecodedBatch, refined
    from icsg.segmentation.watershed import SegmentationConfig

    vae = _VAE()
    truth = _perovskite(3.9)
    start, _ = _displaced(truth, 0.2)
    probs = np.full((1, 16, 16, 16, len(CLASSES)), 0.01)
    probs[..., [1, 3, 4, 6]] = 0.3  # O, Ti, Sr, Ba likely everywhere
    b = DecodedBatch(np.zeros((1, 16, 16, 16)), np.zeros((1, 16, 16, 16, 3)), np.zeros((1, 16, 16, 16)),
                     np.zeros((1, 16, 16, 16)), probs, CLASSES)
    target = _target(vae, truth)

    def run(**kw):
        items = [(Sites(start.abc_A, np.array([56, 22, 8, 8, 8]), start.centroids_vox), None)]
        # no sites added or removed, no exact fit at the end
        cfg = ConsistencyConfig(soft_steps=0, z_neighbours=0, top_k=4, rounds=1, exact_fit_steps=0, **kw)
        got = refined(vae, items, b, target, np.zeros((1, 10)), SPEC, SegmentationConfig(), cfg)[0][0]
        err = np.linalg.norm(SPEC.index_to_cartesian(got.centroids_vox, got.abc_A) - truth.cart_coords, axis=1)
        return got, err

    without, err0 = run(position_steps=0)
    with_, err1 = run(position_steps=200, position_lr_A=0.02)
    assert without.z.tolist() == with_.z.tolist() == [38, 22, 8, 8, 8]
    assert err0.min() > 0.19 and err1.max() < 0.05, (err0, err1)
    assert with_.residual < 0.1 * without.residual and with_.log_probs is not None


def test_restart_from_the_segmentation_keeps_the_nearer_reading():
    """A refined reading left far from its code (Ba for Sr, two O as F) is read again from the segmentation
    (the right elements, sites 0.2 Å off): its positions are fitted and it ends nearer, so it is kept; a reading
    below the threshold, a crystal that did not segment and ``restart_above=None`` are left as they were."""
    from icsg.generation.consistency import refine_sites
    from icsg.generation.search_config import ConsistencyConfig
    from icsg.generation.pipeline import DecodedBatch, restarted
    from icsg.segmentation.watershed import SegmentationConfig

    vae = _VAE()
    truth = _perovskite(3.9)
    target = _target(vae, truth)
    seg_read, _ = _displaced(truth, 0.2)
    vox = SPEC.cartesian_to_index(truth.cart_coords, seg_read.abc_A)
    wrong = Sites(seg_read.abc_A, np.array([56, 22, 9, 9, 8]), vox)
    right = Sites(seg_read.abc_A, seg_read.z.copy(), vox)
    probs = np.full((3, 16, 16, 16, len(CLASSES)), 0.01)
    probs[..., [1, 3, 4]] = 0.3
    b = DecodedBatch(np.zeros((3, 16, 16, 16)), np.zeros((3, 16, 16, 16, 3)), np.zeros((3, 16, 16, 16)),
                     np.zeros((3, 16, 16, 16)), probs, CLASSES)
    zz, cc = np.vstack([target] * 3), np.zeros((3, 10))
    refine_sites(vae, [wrong, right, None], zz, cc, CLASSES, SPEC, ConsistencyConfig(rounds=1, species_passes=0))
    assert wrong.residual > 10 * right.residual
    first = [(wrong, None), (right, None), (None, "no atomic sites found")]
    start = [(Sites(s.abc_A, s.z.copy(), s.centroids_vox.copy()), None) for s in (seg_read, seg_read)] + [(None, "x")]
    cfg = ConsistencyConfig(soft_steps=0, z_neighbours=0, top_k=3, rounds=1, position_steps=100, position_lr_A=0.02,
                            restart_above=2 * right.residual)
    out = restarted(vae, first, start, b, zz, cc, SPEC, SegmentationConfig(), cfg)
    assert out[0][0] is not wrong and out[0][0].z.tolist() == [38, 22, 8, 8, 8]
    assert out[0][0].residual < wrong.residual
    assert out[1][0] is right and out[2] == first[2]
    off = ConsistencyConfig(restart_above=None)
    assert restarted(vae, first, start, b, zz, cc, SPEC, SegmentationConfig(), off) is first
    with pytest.raises(ValueError, match="restart_above"):
        ConsistencyConfig(restart_above=-1.0)


def test_position_fit_with_the_cell_free_recovers_the_cell():
    """The cell read 0.06 Å long on every axis, the sites at the truth's fractional coordinates in it: with
    ``cell_lr`` the fit shrinks cell and positions together towards the truth; without, the cell stays put."""
    vae = _VAE()
    truth = _perovskite(3.9)
    long_cell = np.full(3, 3.96)
    start = Sites(long_cell, np.array([site.specie.Z for site in truth]),
                  SPEC.cartesian_to_index(truth.cart_coords, np.array(truth.lattice.abc)))
    zz, cc = np.vstack([_target(vae, truth)] * 2), np.zeros((2, 10))
    fixed, free = (position_fit(vae, [start], zz[:1], cc[:1], SPEC, steps=150, lr_A=0.005, cell_lr=lr)[0]
                   for lr in (0.0, 2e-3))
    assert np.array_equal(fixed.abc_A, long_cell)
    assert np.abs(free.abc_A - 3.9).max() < 0.01 and free.residual < 0.1 * fixed.residual
    frac = SPEC.index_to_cartesian(free.centroids_vox, free.abc_A) / free.abc_A
    assert np.abs(frac - truth.frac_coords).max() < 0.01


def test_exact_fit_keeps_the_fitted_cell_only_when_the_code_is_reproduced():
    """Through the last stage of the reading (``exact_fits``): a right reading with its cell 0.05 Å long is fitted
    to the truth and keeps the fitted cell; Sr read as Zr comes back as Sr by the element refit, fitted too; a
    reading with an O missing cannot reproduce the code and gets its read cell back, no farther from the code
    than it came; a crystal that did not segment and ``exact_fit_steps=0`` are left as they were."""
    from icsg.generation.consistency import code_distances
    from icsg.generation.search_config import ConsistencyConfig
    from icsg.generation.pipeline import DecodedBatch, element_refit_candidates, exact_fits

    vae = _VAE()
    truth = _perovskite(3.9)
    target = _target(vae, truth)
    read_abc = np.full(3, 3.95)
    vox = SPEC.cartesian_to_index(truth.cart_coords, np.array(truth.lattice.abc))  # true fractional coordinates
    right = Sites(read_abc, np.array([38, 22, 8, 8, 8]), vox.copy())
    wrong = Sites(read_abc, np.array([40, 22, 8, 8, 8]), vox.copy())
    short = Sites(read_abc, np.array([38, 22, 8, 8]), vox[:4].copy())
    zz, cc = np.vstack([target] * 4), np.zeros((4, 10))
    for k, s in enumerate((right, wrong, short)):
        s.residual = float(code_distances(vae, [s], zz[[k]], cc[[k]], SPEC)[0])
    # neighbours in Z within the classes (Zr: Sr and Ba; Ti: F and Sr; O: F), no class probabilities here
    assert [c.z.tolist() for c in element_refit_candidates(wrong, CLASSES, 2)][:2] == [[38, 22, 8, 8, 8],
                                                                                      [56, 22, 8, 8, 8]]
    # width 2: two neighbours on either side (Zr: Ti, Sr and Ba), as F read where N is lies past O
    w1, w2 = ({tuple(c.z.tolist()) for c in element_refit_candidates(wrong, CLASSES, 0, w)} for w in (1, 2))
    assert w1 < w2 and (22, 22, 8, 8, 8) in w2 - w1
    b = DecodedBatch(np.zeros((4, 16, 16, 16)), np.zeros((4, 16, 16, 16, 3)), np.zeros((4, 16, 16, 16)),
                     np.zeros((4, 16, 16, 16)), np.full((4, 16, 16, 16, len(CLASSES)), 0.1), CLASSES)
    items = [(right, None), (wrong, None), (short, None), (None, "no atomic sites found")]
    cfg = ConsistencyConfig(exact_fit_steps=150, exact_fit_cell_lr=2e-3, position_lr_A=0.005,
                            exact_below=1e-3 * right.residual, element_refit_above=1e-3 * right.residual,
                            element_refit_steps=100, element_refit_fits=2, element_refit_width=1,
                            element_refit_rounds=1, site_refit=False)
    counts: dict = {}
    out = exact_fits(vae, items, b, zz, cc, SPEC, cfg, counts=counts)
    for k in (0, 1):
        got = out[k][0]
        assert got.z.tolist() == [38, 22, 8, 8, 8] and got.residual < cfg.exact_below
        assert np.abs(got.abc_A - 3.9).max() < 0.01
    assert np.array_equal(out[2][0].abc_A, read_abc) and out[2][0].residual <= short.residual
    assert out[3] == items[3]
    assert counts == {"crystals": 3, "exact_first": 1, "refit": 2, "refit_kept": 1, "exact": 2}
    assert exact_fits(vae, items, b, zz, cc, SPEC, ConsistencyConfig(exact_fit_steps=0)) is items
    with pytest.raises(ValueError, match="element_refit_above"):
        ConsistencyConfig(element_refit_above=-1.0)
    with pytest.raises(ValueError, match="exact_below"):
        ConsistencyConfig(exact_below=0.0)
    with pytest.raises(ValueError, match="element_refit_width"):
        ConsistencyConfig(element_refit_width=-1)


def test_soft_fit_on_tensorflow():
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("tensorflow", reason="tensorflow not installed (pip install 'icsg[tensorflow]')")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"{__file__}::test_render_soft_of_one_hot_sites_is_eq1",
                        f"{__file__}::test_soft_fit_recovers_elements_cell_and_a_missing_site",
                        f"{__file__}::test_position_fit_moves_displaced_sites_back"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "3 passed" in r.stdout


def test_site_refit_candidates_remove_each_site_and_merge_close_pairs_at_their_centre():
    """One removal per site; a pair of sites 0.59 Å apart (O at x = 0.9, F at x = 1.05 of a 3.9 Å cell, inside
    the padded box) merges at their Z-weighted centre, not wrapped, into O, F and the classes from the larger
    Z to the summed Z (17), one beside on either side (Ti here); a pair as close only through a periodic image
    (eq. 1 draws none) and sites farther apart are left."""
    from icsg.generation.pipeline import site_refit_candidates

    abc = np.full(3, 3.9)
    frac = np.array([[0.5, 0.5, 0.5], [0.9, 0.0, 0.0], [1.05, 0.0, 0.0]])
    vox = SPEC.cartesian_to_index(frac * abc, abc)
    s = Sites(abc, np.array([38, 8, 9]), vox, log_probs=np.log(np.full((3, len(CLASSES)), 1 / len(CLASSES))))
    c = site_refit_candidates(s, CLASSES, SPEC, merge_within_A=1.0, width=1)
    removals, merges = c[:3], c[3:]
    assert [r.z.tolist() for r in removals] == [[8, 9], [38, 9], [38, 8]]
    assert all(len(r.log_probs) == 2 for r in removals)
    assert [m.z.tolist() for m in merges] == [[38, 8], [38, 9], [38, 22]]  # 17 lies between F (9) and Ti (22)
    centre = SPEC.index_to_cartesian(merges[0].centroids_vox[-1], abc) / abc
    np.testing.assert_allclose(centre, [0.9 + 0.15 * 9 / 17, 0, 0], atol=1e-9)
    assert merges[0].log_probs.shape == (2, len(CLASSES))
    assert site_refit_candidates(s, CLASSES, SPEC, merge_within_A=0.5)[3:] == []  # 0.59 Å apart: no merge
    across = Sites(abc, s.z, SPEC.cartesian_to_index(np.array([[0.5, 0.5, 0.5], [0.95, 0, 0], [0.05, 0, 0]]) * abc,
                                                         abc))
    assert len(site_refit_candidates(across, CLASSES, SPEC, merge_within_A=1.0)) == 3
    assert site_refit_candidates(Sites(abc, np.array([38]), vox[:1]), CLASSES, SPEC, 1.0) == []
    # S read as F beside Na (summed Z 20 overshoots 16): every class from Na (11) to Ca (20) is tried, and one
    # on either side
    many = np.array([0, 8, 9, 11, 14, 16, 18, 20, 22, 38])
    fna = Sites(abc, np.array([38, 9, 11]), vox)
    merged = site_refit_candidates(fna, many, SPEC, merge_within_A=1.0, width=1)[3:]
    assert sorted(m.z[-1] for m in merged) == [9, 11, 14, 16, 18, 20, 22]


def test_site_refit_removes_a_spurious_site_and_merges_a_split_one():
    """The refit's site candidates (``ConsistencyConfig.site_refit``): an O read at a spurious position beside
    the five true sites is removed, and Ti read as two O 0.6 Å apart is merged back into Ti; both then fit
    their code to below ``exact_below`` with the cell right. Without site candidates neither is reproduced."""
    from icsg.generation.consistency import code_distances
    from icsg.generation.search_config import ConsistencyConfig
    from icsg.generation.pipeline import DecodedBatch, exact_fits

    vae = _VAE()
    truth = _perovskite(3.9)
    target = _target(vae, truth)
    read_abc = np.full(3, 3.95)
    vox = SPEC.cartesian_to_index(truth.cart_coords, np.array(truth.lattice.abc))
    ti = vox[1]
    shift = SPEC.cartesian_to_index(np.array([[0.3, 0, 0]]) + truth.cart_coords[1], np.array(truth.lattice.abc))[0]
    extra = Sites(read_abc, np.array([38, 22, 8, 8, 8, 8]),
                  np.vstack([vox, SPEC.cartesian_to_index(np.array([[1.0, 2.9, 1.2]]), read_abc)]))
    split = Sites(read_abc, np.array([38, 8, 8, 8, 8, 8]), np.vstack([vox[:1], [2 * ti - shift, shift], vox[2:]]))
    for s in (extra, split):
        s.log_probs = np.log(np.full((6, len(CLASSES)), 1 / len(CLASSES)))
    zz, cc = np.vstack([target] * 2), np.zeros((2, 10))
    for k, s in enumerate((extra, split)):
        s.residual = float(code_distances(vae, [s], zz[[k]], cc[[k]], SPEC)[0])
    b = DecodedBatch(np.zeros((2, 16, 16, 16)), np.zeros((2, 16, 16, 16, 3)), np.zeros((2, 16, 16, 16)),
                     np.zeros((2, 16, 16, 16)), np.full((2, 16, 16, 16, len(CLASSES)), 0.1), CLASSES)
    items = [(extra, None), (split, None)]
    exact = 1e-3 * float(code_distances(vae, [Sites(read_abc, np.array([38, 22, 8, 8, 8]), vox)], zz[:1], cc[:1],
                                        SPEC)[0])
    cfg = ConsistencyConfig(exact_fit_steps=150, exact_fit_cell_lr=2e-3, position_lr_A=0.005, exact_below=exact,
                            element_refit_above=exact, element_refit_steps=100, element_refit_fits=4,
                            element_refit_width=1, element_refit_rounds=2, site_refit=True,
                            site_merge_within_A=1.0)
    counts: dict = {}
    out = exact_fits(vae, items, b, zz, cc, SPEC, cfg, counts=counts)
    for got in (o[0] for o in out):
        assert sorted(got.z.tolist()) == [8, 8, 8, 22, 38] and got.residual < exact
        assert got.log_probs.shape == (5, len(CLASSES))  # one row per site left
        assert np.abs(got.abc_A - 3.9).max() < 0.01
    assert counts["exact"] == 2 and counts["refit_kept"] == 2
    off = exact_fits(vae, items, b, zz, cc, SPEC, dataclasses.replace(cfg, site_refit=False))
    assert all(o[0].residual >= exact for o in off)
    with pytest.raises(ValueError, match="element_refit_rounds"):
        ConsistencyConfig(element_refit_rounds=0)
