"""The any-lattice representation: a map over the unit cell in fractional coordinates, read back exactly."""
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.errors import CrystalError
from icsg.metrics import compare
from icsg.representation.periodic import PeriodicGrid, canonical_cell, encode_periodic, lattice_from_coordinates
from icsg.representation.periodic_decode import decode_periodic, peak_offset


def _wurtzite():
    return Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                     [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])


def _heusler_primitive():
    """Cu2MnAl in its 4-atom rhombohedral (60°) cell, as the Materials Project stores it."""
    return Structure(Lattice.from_parameters(4.21, 4.21, 4.21, 60, 60, 60), ["Cu", "Cu", "Mn", "Al"],
                     [[0.25, 0.25, 0.25], [0.75, 0.75, 0.75], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])


def _monoclinic():
    return Structure(Lattice.monoclinic(5.1, 4.3, 6.7, 103.0), ["Zr", "Zr", "O", "O", "O", "O"],
                     [[0.276, 0.040, 0.209], [0.724, 0.540, 0.291], [0.070, 0.332, 0.345],
                      [0.930, 0.832, 0.155], [0.450, 0.757, 0.479], [0.550, 0.257, 0.021]])


@pytest.mark.parametrize("make", [_wurtzite, _heusler_primitive, _monoclinic])
def test_any_lattice_round_trips_exactly_from_its_true_arrays(make):
    e = encode_periodic(make())
    back = decode_periodic(e.density, e.species, e.coords)
    m = compare(e.structure, back)
    assert m.match and m.dn_sites == 0 and m.species_accuracy == 1.0
    assert m.site_emd_A < 0.01 and m.cell_max_A < 1e-4 and m.angle_max_deg < 1e-3
    assert e.density.shape == e.species.shape == (32, 32, 32) and e.coords.shape == (32, 32, 32, 3)


def test_the_canonical_cell_is_one_per_crystal_and_keeps_its_hand():
    s = _monoclinic()
    c = canonical_cell(s)
    assert np.linalg.det(c.lattice.matrix) > 0 and abs(c.lattice.matrix[0, 1]) < 1e-9  # a along x
    again = canonical_cell(c)  # the same cell again (up to a symmetry of the lattice that moves the atoms)
    assert np.allclose(again.lattice.matrix, c.lattice.matrix) and compare(c, again).match
    # a left-handed basis of the same crystal gives the same canonical cell, not its mirror image
    left = Structure(Lattice(-s.lattice.matrix), s.species, -s.frac_coords)
    assert np.linalg.det(left.lattice.matrix) < 0
    assert compare(c, canonical_cell(left)).match


def test_the_map_is_periodic_and_holds_every_electron():
    from icsg.representation.periodic import render_periodic

    s = canonical_cell(_wurtzite())
    grid = PeriodicGrid()
    z = [site.specie.Z for site in s]
    a, _ = render_periodic(s.frac_coords, z, s.lattice.matrix, grid)
    b, _ = render_periodic(s.frac_coords + [0.25, 0, 1.0], z, s.lattice.matrix, grid)
    assert np.allclose(np.roll(a, 8, axis=0), b, atol=1e-5)  # a quarter cell = 8 voxels; a whole cell = none
    voxel_volume = s.lattice.volume / grid.size**3
    total = a.sum() * grid.density_scale * voxel_volume
    assert total == pytest.approx(sum(site.specie.Z for site in s), rel=0.01)


def test_lattice_and_peak_are_read_exactly():
    lat = Lattice.from_parameters(4.0, 5.5, 7.0, 80, 95, 110)
    e = encode_periodic(Structure(lat, ["Na"], [[0.3, 0.6, 0.1]]))
    assert np.allclose(lattice_from_coordinates(e.coords), e.structure.lattice.matrix, atol=1e-4)
    x = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1)
    centre = np.array([0.3, -0.2, 0.45])
    h = np.array([[2.0, 0.3, 0.1], [0.3, 1.5, -0.2], [0.1, -0.2, 1.0]])
    log_m = -0.5 * np.einsum("...i,ij,...j->...", x - centre, h, x - centre)
    assert np.allclose(peak_offset(log_m), centre)
    assert peak_offset(-log_m) is None  # a minimum is not a peak


def test_bad_crystals_are_named():
    s = _wurtzite()
    big = s * (2, 2, 2)
    with pytest.raises(CrystalError, match="32 sites > 20"):
        encode_periodic(big, item="big")
    dis = s.copy()
    dis.replace(0, {"Zn": 0.5, "Cd": 0.5})
    with pytest.raises(CrystalError, match="disordered"):
        encode_periodic(dis, item="x")


def test_roundtrip_command_reads_any_lattice_and_names_a_bad_file(tmp_path):
    import json

    from icsg.cli import main

    for name, make in (("zno", _wurtzite), ("cu2mnal", _heusler_primitive), ("zro2", _monoclinic)):
        make().to(filename=str(tmp_path / f"{name}.cif"))
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    out = tmp_path / "rt.json"
    assert main(["roundtrip", str(tmp_path), "--encoding", "periodic", "--workers", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_decoded"] == 3 and res["match_rate"] == 1.0 and res["angle_max_error_deg"] < 1e-3
    assert [f["id"] for f in res["failures"]] and "broken" in res["failures"][0]["id"]


def test_an_implausible_decoded_cell_is_refused_with_the_reason():
    from icsg.representation.periodic_decode import check_lattice

    good = Lattice.from_parameters(4.0, 5.0, 6.0, 80, 95, 110).matrix
    assert check_lattice(good) is good
    flat = np.array([[4.0, 0, 0], [0, 5.0, 0], [4.0, 5.0, 0.01]])
    with pytest.raises(ValueError, match="lattice-plane spacing"):
        check_lattice(flat)
    with pytest.raises(ValueError, match="implausible cell"):
        check_lattice(np.diag([4.0, 5.0, 400.0]))


def test_a_peroxide_pair_merged_into_one_peak_is_read_as_two_atoms():
    """O–O at 1.5 Å: one density peak, one label region of two balls; the count of balls and the fit to the
    whole map recover both atoms (peaks alone read one)."""
    s = Structure(Lattice.tetragonal(3.8, 6.8), ["Ba", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.39], [0.5, 0.5, 0.61]])
    e = encode_periodic(s)
    back = decode_periodic(e.density, e.species, e.coords)
    m = compare(e.structure, back)
    assert m.match and m.dn_sites == 0 and m.site_emd_A < 0.01
