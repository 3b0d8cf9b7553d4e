import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.metrics import compare, site_emd
from icsg.grid import GridSpec
from icsg.representation.density import encode
from icsg.representation.imatgen import (ImatgenSpec, cell_image, decode_imatgen, encode_imatgen,
                                         lattice_from_cell_image, peaks_from_basis)
from icsg.representation.merge import merge_periodic_duplicates
from icsg.segmentation.watershed import SegmentationConfig, decode_structure, find_sites


def test_density_roundtrip_perovskite(perovskite):
    spec = GridSpec()
    e = encode(perovskite, spec)
    s = decode_structure(e.species, e.coords, e.density, None, spec)
    m = compare(perovskite, s)
    assert m.match and m.dn_sites == 0 and m.species_accuracy == 1.0
    assert m.cell_mae_A < 1e-4 and m.site_emd_A < 0.03


def test_density_roundtrip_rocksalt(rocksalt):
    spec = GridSpec()
    e = encode(rocksalt, spec)
    s = decode_structure(e.species, e.coords, e.density, None, spec)
    assert len(s) == 8 and compare(rocksalt, s).match


def test_watershed_splits_touching_same_species():
    spec = GridSpec(label_radius_scale=1.6)
    s = Structure(Lattice.cubic(6.0), ["O", "O"], [[0.35, 0.5, 0.5], [0.65, 0.5, 0.5]])  # 1.8 Å apart
    e = encode(s, spec)
    from scipy import ndimage
    assert ndimage.label(e.species > 0)[1] == 1  # one connected blob
    z, cents = find_sites(e.species, e.density, None, SegmentationConfig())
    assert len(z) == 2
    z1, _ = find_sites(e.species, e.density, None, SegmentationConfig(watershed=False))
    assert len(z1) == 1


def test_merge_periodic_duplicates():
    s = Structure(Lattice.cubic(4.0), ["Na", "Na", "Cl"], [[0.01, 0, 0], [0.99, 0, 0], [0.5, 0.5, 0.5]])
    m = merge_periodic_duplicates(s, 0.5)
    assert len(m) == 2
    na = [site for site in m if site.specie.symbol == "Na"][0]
    assert min(na.frac_coords[0], 1 - na.frac_coords[0]) < 1e-9


def test_site_emd_minimum_image_and_species():
    lat = Lattice.cubic(4.0)
    a = Structure(lat, ["Na", "Cl"], [[0.0, 0, 0], [0.5, 0.5, 0.5]])
    b = Structure(lat, ["Na", "Cl"], [[0.975, 0, 0], [0.5, 0.5, 0.5]])  # 0.1 Å across the boundary
    emd, acc = site_emd(a, b)
    assert emd == pytest.approx(0.05) and acc == 1.0
    c = Structure(lat, ["Cl", "Na"], [[0.0, 0, 0], [0.5, 0.5, 0.5]])
    assert site_emd(a, c)[1] == 0.0
    assert compare(a, Structure(lat, ["Na"], [[0, 0, 0]])).dn_sites == 1


def test_imatgen_cell_image_inverts_lengths_and_angles():
    spec = ImatgenSpec()
    for lat in (Lattice.cubic(4.2), Lattice.from_parameters(3.0, 4.5, 6.1, 80, 95, 110),
                Lattice.hexagonal(3.2, 5.2)):
        rec = lattice_from_cell_image(cell_image(lat, spec), spec)
        assert np.allclose(rec.abc, lat.abc, atol=1e-4)
        assert np.allclose(rec.angles, lat.angles, atol=1e-2)


def test_imatgen_peak_refinement_is_subvoxel():
    spec = ImatgenSpec()
    s = Structure(Lattice.cubic(5.0), ["V"], [[0.3131, 0.4567, 0.5999]])
    enc = encode_imatgen(s, spec)
    peaks = peaks_from_basis(enc.basis[0], spec) - spec.margin_A
    assert np.allclose(peaks[0], s.cart_coords[0], atol=1e-3)
    raw = peaks_from_basis(enc.basis[0], ImatgenSpec(refine=False)) - spec.margin_A
    assert np.abs(raw[0] - s.cart_coords[0]).max() > 0.01  # raw voxel centres are off-grid


def test_imatgen_roundtrip(perovskite):
    enc = encode_imatgen(perovskite)
    assert enc.cell.shape == (32, 32, 32) and enc.basis.shape == (3, 64, 64, 64)
    assert enc.elements == ["O", "Ti", "Sr"]
    s = decode_imatgen(enc.cell, enc.basis, enc.elements)
    m = compare(perovskite, s)
    assert m.match and m.site_emd_A < 1e-3
