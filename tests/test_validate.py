"""Relaxation check helpers (icsg validate)."""

import numpy as np
import pytest

from icsg.generation.validate import bond_change_percent, cell_change_percent, structure_type


def test_uniform_strain_changes_bonds_and_cell_by_the_strain(perovskite):
    strained = perovskite.copy()
    strained.scale_lattice(perovskite.volume * 1.03**3)  # +3 % on every length
    assert cell_change_percent(perovskite, strained) == pytest.approx(3.0, abs=1e-6)
    assert bond_change_percent(perovskite, strained) == pytest.approx(3.0, abs=1e-6)
    assert bond_change_percent(perovskite, perovskite) == pytest.approx(0.0, abs=1e-9)


def test_bond_change_follows_sites_across_the_boundary(perovskite):
    moved = perovskite.copy()
    moved.translate_sites([1], [0.02, 0, 0])  # Ti off-centre: some Ti-O bonds stretch, others shrink
    assert 0 < bond_change_percent(perovskite, moved) < 5
    wrapped = perovskite.copy()
    wrapped.translate_sites([0], [1.0, 0, 0], to_unit_cell=False)  # same crystal, site in the next image
    assert bond_change_percent(perovskite, wrapped) == pytest.approx(0.0, abs=1e-9)


def test_structure_type_names_the_prototype(perovskite):
    assert structure_type(perovskite) == "ABC3 Pm-3m"


def test_validate_relaxes_a_candidate(tmp_path, perovskite):
    pytest.importorskip("chgnet", reason="CHGNet not installed (pip install 'icsg[relax]')")
    from icsg.generation.validate import validate_dir

    s = perovskite.copy()
    s.scale_lattice(s.volume * 1.05**3)
    s.to(filename=str(tmp_path / "a.cif"))
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 3\n")
    res, summary = validate_dir(tmp_path, fmax=0.2, steps=50, progress=False)
    good = res[res["file"] == "a.cif"].iloc[0]
    assert good["cell_change_pct"] > 1 and np.isfinite(good["e_chgnet_eV_atom"])
    assert good["relaxation_energy_eV_atom"] > 0
    assert "unreadable" in res[res["file"] == "bad.cif"].iloc[0]["failure"]
    assert "not DFT" in summary["note"] and summary["n_relaxed"] == 1
