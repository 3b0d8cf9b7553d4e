"""Codes of any lattice: the six-number-cell readout, its slot matching loss and count head, and the commands
from a periodic dataset to reconstruction and generation."""
import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from icsg.cli import main


def test_slot_matching_ignores_the_order_of_an_element_s_sites_but_not_the_element():
    from keras import ops

    from icsg.models.slots import chamfer_slot_loss as _chamfer

    frac = np.array([[[0.0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0, 0], [0.75, 0, 0]]], np.float32)
    site_Z = np.array([[8, 8, 22, 0]], np.int32)
    abc = np.array([[4.0, 5.0, 6.0]], np.float32)
    swapped = frac[:, [1, 0, 2, 3]]
    assert float(ops.convert_to_numpy(_chamfer(swapped, frac, site_Z, abc))) < 1e-10
    wrapped = frac.copy()
    wrapped[0, 0, 0] = 0.999  # 0.004 Å across the cell boundary
    assert float(ops.convert_to_numpy(_chamfer(wrapped, frac, site_Z, abc))) < 1e-4
    moved = frac.copy()
    moved[0, 2] = [0.5, 0.5, 0.5]  # Ti put on an O site: far from every Ti
    assert float(ops.convert_to_numpy(_chamfer(moved, frac, site_Z, abc))) > 1.0
    stacked = frac.copy()
    stacked[0, 1] = stacked[0, 0]  # both O slots on one O site: each slot is on a site, one site has none
    both = float(ops.convert_to_numpy(_chamfer(stacked, frac, site_Z, abc)))
    assert both > 1.0 / 3  # the separation term (1 Å)² over 3 sites, beside the uncovered site


def test_a_six_number_cell_readout_learns_compositions_and_oblique_cells():
    import keras

    from icsg.models.readout import ReadoutConfig, build_readout, read_heads

    keras.utils.set_random_seed(0)
    rc = ReadoutConfig(elements_Z=(8, 30, 40), max_count=4, max_sites=6, latent_dim=4, hidden=64, abc_mean_A=5.0,
                       abc_std_A=1.0, angles=True, angle_mean_deg=95.0, angle_std_deg=15.0, count_features=True,
                       slot_matching=True)
    model = build_readout(rc)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    zs = np.array([[30, 30, 8, 8, 0, 0], [40, 40, 8, 8, 8, 8]], np.int32)
    fr = np.random.default_rng(0).random((2, 6, 3)).astype(np.float32)
    abc = np.array([[3.25, 3.25, 5.21], [5.1, 4.3, 6.7]], np.float32)
    ang = np.array([[90, 90, 120], [90, 103, 90]], np.float32)
    y = {"counts": np.array([[2, 2, 0], [4, 0, 2]], np.int32), "abc_A": abc, "angles_deg": ang,
         "property": np.array([1.0, np.nan], np.float32)}
    cell = np.concatenate([abc, ang], 1)
    model.fit((zs, fr, cell), y, epochs=300, batch_size=2, verbose=0)
    mu, _ = model.encoder.predict([zs, fr, cell], verbose=0)
    counts, _, read, _ = read_heads(model.heads.predict(mu, verbose=0), rc)
    assert counts.tolist() == y["counts"].tolist()
    assert np.abs(read[:, :3] - abc).max() < 0.1 and np.abs(read[:, 3:] - ang).max() < 1.0


def test_the_site_path_reads_an_untrained_readout_s_sites_and_counts_back_exactly():
    from icsg.models.readout import ReadoutConfig, build_readout, read_heads

    rc = ReadoutConfig(elements_Z=(8, 30, 40), max_count=4, max_sites=6, latent_dim=3 + 36, hidden=16, abc_mean_A=5.0,
                       abc_std_A=1.0, angles=True, angle_mean_deg=95.0, angle_std_deg=15.0, count_features=True,
                       slot_matching=True, ordinal_counts=True, site_features=True)
    model = build_readout(rc)
    zs = np.array([[40, 30, 30, 8, 8, 0]], np.int32)
    fr = np.random.default_rng(1).random((1, 6, 3)).astype(np.float32)
    fr[0, 5] = 0.0
    cell = np.array([[5.1, 4.3, 6.7, 90, 103, 90]], np.float32)
    mu, _ = model.encoder.predict([zs, fr, cell], verbose=0)
    counts, _, _, _ = read_heads(model.heads.predict(mu, verbose=0), rc)
    assert counts.tolist() == [[2, 2, 1]]
    back = model.slots.predict([mu, zs], verbose=0)[0, :5] - fr[0, :5]
    assert np.abs(back - np.round(back)).max() < 1e-5
    with pytest.raises(ValueError, match="latent_dim >= 39"):
        build_readout(ReadoutConfig(**{**rc.__dict__, "latent_dim": 38}))


def test_ordinal_count_logits_peak_at_the_mean():
    from keras import ops

    from icsg.models.readout import _discrete_gaussian

    logits = np.asarray(ops.convert_to_numpy(_discrete_gaussian(np.array([[2.2, 0.1]], np.float32),
                                                                np.array([[-1.0, -1.0]], np.float32), 5)))
    assert logits.shape == (1, 2, 5) and logits[0].argmax(-1).tolist() == [2, 0]


def _oblique_csv(tmp_path, n=40):
    rows = []
    for i in range(n):
        if i % 2:
            s = Structure(Lattice.hexagonal(3.25 + 0.01 * i, 5.21), ["Zn", "Zn", "O", "O"],
                          [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])
        else:
            s = Structure(Lattice.monoclinic(5.1, 4.3 + 0.01 * i, 6.7, 103.0), ["Zr", "O", "O"],
                          [[0.276, 0.040, 0.209], [0.070, 0.332, 0.345], [0.450, 0.757, 0.479]])
        rows.append({"material_id": f"x{i}", "cif": s.to(fmt="cif"), "e": -1.0 - 0.02 * i})
    path = tmp_path / "oblique.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_periodic_commands_read_codes_back_and_generate(tmp_path):
    """prepare --encoding periodic -> train-vae, train-readout -> ship-weights -> fit-latent-prior -> reconstruct and
    generate read the code (one epoch each: the numbers are not the point, the path is)."""
    csv, ds, w = _oblique_csv(tmp_path, n=100), tmp_path / "ds", tmp_path / "w"  # the flow needs >= 64 codes
    quick = ["--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--val-limit", "2", "--quiet"]
    assert main(["prepare", str(csv), "--out", str(ds), "--property", "e", "--val-fraction", "0.3", "--encoding",
                 "periodic", "--grid-size", "16", "--workers", "1"]) == 0
    assert main(["train-vae", str(ds), "--out", str(tmp_path / "vae"), "--latent", "8", "--filters", "4,8"] + quick) == 0
    assert main(["train-readout", str(ds), "--out", str(tmp_path / "readout"), "--hidden", "32"] + quick) == 0
    readout = json.loads((tmp_path / "readout" / "model.json").read_text())["config"]
    assert readout["angles"] and readout["count_features"] and readout["slot_matching"] and readout["ordinal_counts"]
    assert readout["site_features"] and readout["latent_dim"] == 32 + 3 + 6 * readout["max_sites"]
    for name in ("vae", "readout"):
        assert main(["ship-weights", str(tmp_path / name), "--name", name, "--to", str(w)]) == 0
    assert main(["fit-latent-prior", str(ds), "--weights", str(w), "--maps", "100", "--flow-steps", "20"]) == 0
    assert json.loads((w / "flow_prior.json").read_text())["part"] == "z_read"
    out = tmp_path / "rec.json"
    assert main(["reconstruct", str(csv), "--weights", str(w), "--limit", "6", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["n"] == 6 and 0.0 <= rec["match_rate"] <= 1.0
    gen = tmp_path / "gen"
    assert main(["generate", "--weights", str(w), "--n", "4", "--condition", "2", "--out", str(gen)]) == 0
    summary = json.loads((gen / "summary.json").read_text())
    assert summary["n_requested"] == 4 and summary["read"] + len(summary["failures"]) == 4
    assert summary["prior"] == "flow" and (gen / "density_slices.png").stat().st_size > 0
    assert main(["generate", "--weights", str(w), "--n", "2", "--condition", "2", "--prior", "fitted", "--out",
                 str(tmp_path / "gen_fitted")]) == 0
    assert json.loads((tmp_path / "gen_fitted" / "summary.json").read_text())["prior"] == "fitted"


def test_the_shipped_any_lattice_models_read_materials_project_crystals_back(shared_data, tmp_path):
    """A guard on weights/mp and its reading path (most of these crystals are training crystals; the held-out
    measurement is benchmarks/reconstruction_periodic.py)."""
    from icsg.pretrained import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "mp" / "readout.json").exists():
        pytest.skip("shipped any-lattice weights not found")
    out = tmp_path / "rec.json"
    assert main(["reconstruct", str(shared_data / "mp_20_sample" / "all.csv.gz"), "--weights", str(WEIGHTS_DIR / "mp"),
                 "--limit", "40", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["n"] == 40 and rec["match_rate"] >= 0.6


def test_a_cubic_readout_refuses_to_read_codes_of_any_lattice():
    from icsg.pretrained import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "readout.json").exists():
        pytest.skip("shipped weights not found")
    from icsg.generation.periodic_codec import PeriodicCodec

    with pytest.raises(ValueError, match="periodic VAE"):
        PeriodicCodec(WEIGHTS_DIR)


def test_separate_atoms_moves_too_close_atoms_apart_and_leaves_the_rest():
    from icsg.generation.periodic_codec import separate_atoms

    lat = Lattice.from_parameters(4.0, 5.0, 6.0, 80, 95, 110)
    frac = np.array([[0.1, 0.1, 0.1], [0.12, 0.1, 0.1], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.99, 0.1, 0.1]])
    moved = Structure(lat, ["O"] * 5, separate_atoms(frac, lat, 1.0))
    d = moved.distance_matrix + np.eye(5) * 9
    assert d.min() >= 0.999  # periodic images included (the last atom sits 0.44 Å from the first across the face)
    apart = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    assert np.allclose(separate_atoms(apart, lat, 1.0), apart)


def test_compositions_from_a_prior_prefer_charge_balance_among_the_likeliest():
    from pymatgen.core import Composition

    from icsg.generation.composition import balanced_or_alloy, counts_preferring_balanced

    lp = np.full((1, 2, 9), -20.0)  # Li and O: Li3O5 (no charge balance) is likelier than Li2O
    lp[0, 0, 3], lp[0, 0, 2] = -0.1, -1.0
    lp[0, 1, 5], lp[0, 1, 1] = -0.1, -1.0
    formulas, counts = np.array([[5, 3], [2, 1]]), np.array([10, 10])
    assert counts_preferring_balanced(lp, formulas, counts, (3, 8), top=10).tolist() == [[2, 1]]
    assert counts_preferring_balanced(lp, formulas, counts, (3, 8), top=1).tolist() == [[3, 5]]
    assert balanced_or_alloy(Composition("Cu3Au")) and balanced_or_alloy(Composition("SrTiO3"))
    assert not balanced_or_alloy(Composition("Li3O5")) and not balanced_or_alloy(Composition("CsBr7"))  # Br-1/7


def test_a_gaussian_completes_a_code_from_its_tail_by_the_conditional_mean():
    from icsg.generation.latent_prior import LatentPrior

    chol = np.linalg.cholesky(np.array([[1.0, 0.5], [0.5, 1.0]]))[None]
    prior = LatentPrior(mean=np.array([[1.0, 0.0]]), chol=chol, counts=np.array([10]), n_maps=10, source="t")
    assert np.allclose(prior.complete(np.array([[2.0]]), 0), [[2.0, 2.0]])  # 1 + 0.5 / 1 · (2 - 0)
