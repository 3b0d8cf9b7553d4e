import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.errors import CrystalError
from icsg.grid import GridSpec
from icsg.representation.augment import cube_rotations, rotate_lengths, rotate_map
from icsg.representation.density import (coordinate_grid, density_map, encode, occupancy_mask,
                                         species_matrix)
from icsg.representation.radii import ionic_radius_A
from icsg.segmentation.lattice import lengths_from_coordinates


def _single_atom(symbol="Na", a=4.0):
    return Structure(Lattice.cubic(a), [symbol], [[0.5, 0.5, 0.5]])


def test_grid_centres_and_inverse():
    spec = GridSpec(size=32, padding=0.25)
    c = spec.axis_centres_A(4.0)
    h = 4.0 * 1.5 / 32
    assert c[0] == pytest.approx(-1.0 + h / 2)
    assert c[-1] == pytest.approx(5.0 - h / 2)
    xyz = np.array([[0.3, 1.7, 3.9]])
    idx = spec.cartesian_to_index(xyz, [4.0, 4.0, 4.0])
    assert np.allclose(spec.index_to_cartesian(idx, [4.0, 4.0, 4.0]), xyz)


def test_eq1_density_at_known_voxels():
    # even grid: the cell centre (2 Å) lies between voxels 15 and 16, at distance sqrt(3)·h/2
    spec = GridSpec(size=32, padding=0.25, density_scale=1.0)
    s = _single_atom("Na", 4.0)
    m = density_map(s, spec)
    r = ionic_radius_A("Na")
    h = 4.0 * 1.5 / 32
    for idx in [(15, 15, 15), (16, 16, 16), (15, 16, 16), (10, 20, 16)]:
        x = np.array([spec.axis_centres_A(4.0)[i] for i in idx])
        d2 = np.sum((x - 2.0) ** 2)
        expected = (2 * np.pi) ** -1.5 * 11 / r**3 * np.exp(-d2 / (2 * r**2))
        assert m[idx] == pytest.approx(expected, rel=1e-5)
    assert m[15, 15, 15] == pytest.approx(m[16, 16, 16], rel=1e-6)  # symmetric about the centre
    assert (2 * np.pi) ** -1.5 * 11 / r**3 * np.exp(-3 * h**2 / 8 / r**2) == pytest.approx(m[15, 15, 15], rel=1e-5)


def test_eq1_normalisation_scale_is_exact():
    s = _single_atom()
    a = density_map(s, GridSpec(density_scale=1.0))
    b = density_map(s, GridSpec(density_scale=2.5))
    assert np.allclose(a, b * 2.5, rtol=1e-6)


def test_eq2_eq3_labels_within_label_radius():
    spec = GridSpec(label_radius_scale=1.0)
    s = _single_atom("Na", 4.0)
    S = species_matrix(s, spec)
    r = ionic_radius_A("Na")
    x = spec.axis_centres_A(4.0)
    d = np.sqrt((x[:, None, None] - 2) ** 2 + (x[None, :, None] - 2) ** 2 + (x[None, None, :] - 2) ** 2)
    assert np.array_equal(S == 11, d <= r)
    assert set(np.unique(S)) == {0, 11}
    assert np.array_equal(occupancy_mask(S), (d <= r).astype(np.uint8))


def test_eq2_overlap_goes_to_closest_site():
    # two atoms 1.0 Å apart with radii > 0.5 Å: every labelled voxel belongs to the nearer one
    s = Structure(Lattice.cubic(6.0), ["K", "Cl"], [[0.4, 0.5, 0.5], [0.4 + 1.0 / 6.0, 0.5, 0.5]])
    spec = GridSpec(label_radius_scale=1.0)
    S = species_matrix(s, spec)
    x = spec.axis_centres_A(6.0)
    for i in range(32):
        if S[i, 16, 16]:
            closer_k = abs(x[i] - 2.4) < abs(x[i] - 3.4)
            assert S[i, 16, 16] == (19 if closer_k else 17)


def test_coordinate_grid_and_lattice_recovery():
    spec = GridSpec()
    for abc in ([3.1, 3.1, 3.1], [4.0, 5.5, 7.25], [9.8, 9.8, 9.8]):
        c = coordinate_grid(abc, spec)
        assert c.shape == (32, 32, 32, 3)
        assert np.allclose(lengths_from_coordinates(c, spec), abc, atol=1e-5)
        assert np.allclose(lengths_from_coordinates(c, spec, "slope"), abc, atol=1e-5)
        assert np.allclose(lengths_from_coordinates(c, spec, "centre"), abc, atol=1e-5)


def test_lattice_recovery_is_robust_and_unbiased():
    spec = GridSpec()
    c = coordinate_grid([5.0, 5.0, 5.0], spec).astype(np.float64)
    rng = np.random.default_rng(0)
    noisy = c + rng.normal(0, 0.01, c.shape)
    spikes = noisy.copy()
    spikes[rng.random(c.shape[:3]) < 0.01] = 7.0  # 1 % corrupted voxels
    # least squares (default) is the best estimate under voxel noise: one parameter, 32^3 voxels
    assert np.allclose(lengths_from_coordinates(noisy, spec), 5.0, atol=2e-3)
    assert np.abs(lengths_from_coordinates(noisy, spec) - 5).max() < np.abs(
        lengths_from_coordinates(noisy, spec, "centre") - 5).max()
    assert np.allclose(lengths_from_coordinates(spikes, spec, "centre"), 5.0, atol=0.1)  # median: shifts ~1 % of range
    flat = np.full_like(c, c.mean())  # a decoder that learned the level, not the ramp
    assert np.allclose(lengths_from_coordinates(flat, spec, "centre"), 5.0, atol=1e-6)
    noisy[3] = 7.0  # a whole corrupted slice
    est = lengths_from_coordinates(noisy, spec, "slope")
    assert np.allclose(est, 5.0, atol=0.02)
    naive = (c[..., 0].max() - c[..., 0].min()) * spec.length_scale_A / 1.5  # the original's estimate
    assert naive == pytest.approx(5.0 * 31 / 32, rel=1e-5)


def test_rotations_are_exact_and_match_rotated_crystal(perovskite):
    rots = cube_rotations()
    assert len(rots) == 24 and len(set(rots)) == 24
    spec = GridSpec()
    e = encode(perovskite, spec)
    for rot in rots:
        m = rotate_map(e.density, rot)
        assert np.array_equal(np.sort(m.ravel()), np.sort(e.density.ravel()))  # a permutation of voxels
        # encoding the rotated crystal gives the rotated maps
        frac = perovskite.frac_coords[:, list(rot.perm)]
        for ax, f in enumerate(rot.flips):
            if f:
                frac[:, ax] = 1 - frac[:, ax]
        rotated = Structure(Lattice.cubic(3.905), perovskite.species, frac)
        e2 = encode(rotated, spec)
        assert np.allclose(e2.density, m, atol=1e-6)
        assert np.array_equal(e2.species, rotate_map(e.species, rot))


def test_rotation_permutes_lengths():
    rot = [r for r in cube_rotations() if r.perm == (1, 0, 2)][0]
    assert rotate_lengths(np.array([3.0, 4.0, 5.0]), rot).tolist() == [4.0, 3.0, 5.0]


def test_encode_rejects_non_orthogonal_and_disordered():
    hexa = Structure(Lattice.hexagonal(3.0, 5.0), ["Mg"], [[0, 0, 0]])
    with pytest.raises(CrystalError) as err:
        encode(hexa, item="hex.cif")
    assert err.value.reason == "non_cubic" and "hex.cif" in str(err.value)
    dis = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    with pytest.raises(CrystalError) as err:
        encode(dis, item="alloy")
    assert err.value.reason == "disordered"


def test_no_radius_element_is_named():
    s = Structure(Lattice.cubic(4.0), ["Ar"], [[0, 0, 0]])
    with pytest.raises(CrystalError) as err:
        encode(s, item="argon.cif")
    assert err.value.reason == "no_radius" and "Ar" in str(err.value)
    assert ionic_radius_A("Ar", fallback_A=1.2) == 1.2
