import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.generation import filters as F
from icsg.generation.sampling import interpolate, sample_around, sample_prior, slerp


def test_slerp_endpoints_norm_and_fallback():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 0.0])
    path = slerp(a, b, np.linspace(0, 1, 5))
    assert np.allclose(path[0], a) and np.allclose(path[-1], b)
    assert np.allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)  # stays on the sphere
    assert np.allclose(path[2], np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)
    par = slerp(a, 2 * a, np.array([0.0, 0.5, 1.0]))  # parallel: linear fallback
    assert np.allclose(par[1], 1.5 * a)
    lin = interpolate(a, b, 3, "linear")
    assert np.allclose(lin[1], [0.5, 0.5, 0])
    with pytest.raises(ValueError):
        interpolate(a, b, 1)
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(a, b, 3, "cubic")


def test_sampling_statistics():
    rng = np.random.default_rng(0)
    z = sample_prior(4000, 8, rng)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    mu = np.arange(8.0)
    za = sample_around(mu, 4000, 0.5, rng)
    assert np.allclose(za.mean(0), mu, atol=0.05) and abs(za.var(0).mean() - 0.5) < 0.03
    with pytest.raises(ValueError):
        sample_around(mu, 2, -1.0, rng)


def test_distance_filter():
    ok = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])  # 0.4 Å
    tiny = Structure(Lattice.cubic(0.45), ["Na"], [[0, 0, 0]])  # own image at 0.45 Å
    assert F.distances_ok(ok) and not F.distances_ok(close) and not F.distances_ok(tiny)


def test_stoichiometry_charge_and_window(perovskite):
    other = perovskite.copy()
    other.replace_species({"Sr": "Ba"})
    assert F.same_stoichiometry(perovskite, perovskite) and not F.same_stoichiometry(perovskite, other)
    assert F.charge_neutral(perovskite)
    assert not F.charge_neutral(Structure(Lattice.cubic(4.0), ["Na", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    assert F.within_window(1.1, 1.0) and not F.within_window(1.3, 1.0) and F.within_window(-0.9, -1.0)
    assert not F.within_window(float("nan"), 1.0)


def test_novelty_and_uniqueness(perovskite, rocksalt):
    training = F.TrainingSet([perovskite])
    shifted = perovskite.copy()
    shifted.translate_sites(list(range(5)), [0.1, 0.1, 0.1])  # same crystal, other origin
    strained = perovskite.copy()
    strained.scale_lattice(perovskite.volume * 1.02)
    assert training.contains(shifted) and training.contains(strained)
    assert not training.contains(rocksalt)
    mask = F.unique_mask([perovskite, shifted, rocksalt, None], [True, True, True, False])
    assert mask == [True, False, True, False]


def test_training_set_from_csv_is_lazy(tmp_path, perovskite, rocksalt):
    import pandas as pd

    pd.DataFrame({"formula": ["SrTiO3", "NaCl"], "cif": [perovskite.to(fmt="cif"), rocksalt.to(fmt="cif")]}).to_csv(
        tmp_path / "t.csv", index=False)
    ts = F.TrainingSet.from_csv(tmp_path / "t.csv")
    assert ts.size == 2 and all(isinstance(v[0], str) for v in ts.by_formula.values())
    assert ts.contains(perovskite)
    assert not isinstance(ts.by_formula["SrTiO3"][0], str) and isinstance(ts.by_formula["NaCl"][0], str)


class _FakeUNet:
    """predict() like the Keras UNet: occupancy from the density plus an optional fixed, non-rotating bias."""

    def __init__(self, bias=None):
        self.bias = bias

    def predict(self, x, batch_size=16, verbose=0):
        occ = 1 / (1 + np.exp(-(x - 0.5) * 8))
        if self.bias is not None:
            occ = np.clip(occ + self.bias[None, ..., None], 0, 1)
        species = np.concatenate([1 - occ, occ], -1)  # classes: background, element 8
        return {"species": species, "occupancy": occ}


def test_rotation_averaged_segmentation():
    from icsg.segmentation.unet_inference import segment_maps
    from icsg.representation.augment import cube_rotations, rotate_map, unrotate_map

    rng = np.random.default_rng(0)
    v = rng.random((8, 8, 8, 2))
    for rot in cube_rotations():
        assert np.array_equal(unrotate_map(rotate_map(v, rot), rot), v)
    dens = rng.random((2, 8, 8, 8))
    # an equivariant model: averaging changes nothing
    z1, o1 = segment_maps(_FakeUNet(), dens, [8], rotations=1)
    z4, o4 = segment_maps(_FakeUNet(), dens, [8], rotations=4)
    assert np.allclose(o1, o4, atol=1e-12) and np.array_equal(z1, z4) and set(np.unique(z1)) <= {0, 8}
    # a model with an error tied to the box orientation: the average spreads it over the rotations
    bias = np.zeros((8, 8, 8))
    bias[0] = 0.4
    _, ob = segment_maps(_FakeUNet(bias), dens, [8], rotations=24)
    expected = np.mean([np.clip(o1 + unrotate_map(bias, r)[None], 0, 1) for r in cube_rotations()], axis=0)
    assert np.allclose(ob, expected, atol=1e-12)
    with pytest.raises(ValueError, match="between 1 and 24"):
        segment_maps(_FakeUNet(), dens, [8], rotations=25)


def test_guidance_keeps_the_training_mix_of_formulas():
    from icsg.generation.guidance import keep_formula_mix

    # ranked draws: four ABX3-like (3, 1, 1) first, then two (1, 1, 1, 1, 1); the data holds them 1 : 1
    forms = [(3, 1, 1)] * 4 + [(1, 1, 1, 1, 1)] * 2
    order = np.arange(6)
    shares = {(3, 1, 1): 0.5, (1, 1, 1, 1, 1): 0.5}
    eligible = np.ones(6, bool)
    assert keep_formula_mix(order, forms, eligible, shares, 4).tolist() == [0, 1, 4, 5, 2, 3]
    eligible[5] = False  # a draw the ranking puts aside (e.g. not typical) does not fill a quota
    assert keep_formula_mix(order, forms, eligible, shares, 4).tolist() == [0, 1, 4, 2, 3, 5]
    assert keep_formula_mix(order, forms, eligible, {}, 4).tolist() == order.tolist()  # no record: the ranking
