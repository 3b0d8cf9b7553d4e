"""The main job on the shipped weights: every sampling mode with a small n, and every bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from icsg.cli import main
from icsg.generation.consistency import ConsistencyConfig
from icsg.pretrained import WEIGHTS_DIR

NEEDED = ["unet.weights.h5", "unet.json", "vae.weights.h5", "vae.json", "vae_prior.npz", "vae_cell.npz",
          "cgcnn_heat_ref.pt", "cgcnn_band_gap.pt"]


@pytest.fixture(scope="module")
def generator():
    missing = [f for f in NEEDED if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    from icsg.generation.generator import Generator

    return Generator(seed=0, batch_size=8, refine=False)  # the refinement has its own test below: it costs seconds


def test_sample_modes(generator, perovskite, rocksalt):
    df = generator.sample(6, condition=2)
    assert len(df) == 6 and {"structure", "formula", "valid", "z", "heat_ref", "band_gap"} <= set(df.columns)
    assert df["z"].iloc[0].shape == (generator.latent_dim,)
    df = generator.sample(3, target=generator.bin_centre(8))
    assert (df["condition"] == 8).all()
    df = generator.around(perovskite, 4, variance=0.5)
    assert len(df) == 4
    z = np.stack(df["z"].to_list())
    mu, _ = generator.encode(perovskite)
    assert np.all(np.abs(z - mu).mean(1) < 2.0)
    df = generator.interpolate(perovskite, rocksalt, steps=4, method="slerp")
    assert len(df) == 4


def test_generator_bad_arguments(generator):
    with pytest.raises(ValueError, match="condition must be an integer bin"):
        generator.sample(2, condition=12)
    with pytest.raises(ValueError, match="outside the training range"):
        generator.sample(2, target=1e6)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        generator.sample(0)
    with pytest.raises(ValueError, match="prior must be one of"):
        type(generator)(prior="uniform")


def test_random_samples_come_from_the_fitted_prior(generator):
    from icsg.generation.latent_prior import load_latent_prior
    from icsg.pretrained import read_description, sha256

    prior = generator.latent_prior
    assert prior is not None and prior.mean.shape == (generator.n_bins, generator.latent_dim)
    meta = read_description(WEIGHTS_DIR / "vae.json", "")
    assert meta["latent_prior"]["sha256"] == sha256(WEIGHTS_DIR / "vae_prior.npz")  # the prior of these weights
    rng_state = generator.rng.bit_generator.state
    z = np.stack(generator.sample(2, condition=5)["z"].to_list())
    generator.rng.bit_generator.state = rng_state
    expect = load_latent_prior(WEIGHTS_DIR / "vae_prior.npz").sample(2, generator.rng, condition=5)
    assert np.allclose(z, expect, atol=1e-6)


def test_generate_cli_writes_outputs(generator, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--n", "3", "--condition", "4", "--out", str(out), "--no-novelty", "--keep-all",
                 "--position-steps", "2", "--restart-above", "1e-3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_requested"] == 3 and "funnel" in summary and summary["crystals_per_second"] > 0
    assert summary["refine"] is True and summary["position_steps"] == 2
    assert summary["restart_above"] == 1e-3  # off by default in generation
    # the exact fit and the element refit: reconstruction only, off by default in generation
    assert summary["exact_fit_steps"] == 0 and summary["element_refit_above"] is None
    table = pd.read_csv(out / "candidates.csv")
    assert len(table) == 3 and "heat_ref" in table.columns
    assert len(list(out.glob("*.cif"))) == summary["cif_files"]
    assert (out / "density_slices.png").stat().st_size > 0
    assert summary["prior"] == "fitted (temperature 1.0)"
    out2 = tmp_path / "gen_standard"
    assert main(["generate", "--n", "2", "--prior", "standard", "--out", str(out2), "--no-novelty",
                 "--no-refine"]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["prior"] == "standard (temperature 1.0)" and summary["refine"] is False
    assert summary["restart_above"] is None


def test_refinement_brings_decoded_crystals_closer_to_their_codes(generator):
    z = generator.latent_prior.sample(2, np.random.default_rng(1), condition=4)
    cond = np.tile(np.eye(generator.n_bins)[4], (2, 1))
    score_only = ConsistencyConfig(rounds=1, species_passes=0, soft_steps=0, position_steps=0)
    before, after = [], []
    # a shorter search than the default, same moves, no soft fit or position rounds (those follow)
    light = ConsistencyConfig(top_k=3, rounds=2, species_passes=2, soft_steps=0, position_steps=0)
    for cfg, out in ((score_only, before), (light, after)):
        generator.consistency = cfg
        try:
            out.append(generator.decode(z, cond, [4] * 2))
        finally:
            generator.consistency = None
    b, a = before[0]["latent_residual"].to_numpy(), after[0]["latent_residual"].to_numpy()
    ok = np.isfinite(b)
    assert ok.any() and np.all(a[ok] <= b[ok] + 1e-12) and np.any(a[ok] < b[ok])
    assert generator.decode(z[:1], cond[:1], [4])["latent_residual"].isna().all()  # refine=False: not scored
    # the soft fit first, the position rounds after the search
    generator.consistency = ConsistencyConfig(top_k=2, rounds=1, species_passes=1, soft_steps=3, position_steps=3)
    try:
        soft = generator.decode(z, cond, [4] * 2)
    finally:
        generator.consistency = None
    assert soft["structure"].notna().any() and np.isfinite(soft["latent_residual"]).any()


@pytest.mark.parametrize("args,message", [
    (["--condition", "12"], "condition must be an integer bin"),
    (["--target", "1e6"], "outside the training range"),
    (["--n", "0"], "--n must be positive"),
    (["--around", "missing.cif"], "missing.cif: no such file"),
    (["--around", "no-such-id", "--data", "{csv}"], "id 'no-such-id' not found"),
])
def test_generate_cli_bad_input(generator, tmp_path, capsys, args, message, perovskite):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"material_id": ["a"], "cif": [perovskite.to(fmt="cif")]}).to_csv(csv, index=False)
    out = tmp_path / "out"
    args = [a.replace("{csv}", str(csv)) for a in args]
    assert main(["generate", "--out", str(out), "--no-novelty"] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_generate_cli_unwritable_and_missing_weights(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--out", str(blocker / "sub"), "--n", "2"]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "o"), "--n", "2", "--weights", str(tmp_path / "none")]) == 2
    assert "missing" in capsys.readouterr().err


BASELINE_FILES = ["imatgen.json", "imatgen_cell.weights.h5", "imatgen_basis.weights.h5", "imatgen_mvae.weights.h5",
                  "ccdcgan.json", "ccdcgan_generator.weights.h5", "ccdcgan_regressor.weights.h5"]


@pytest.mark.parametrize("model", ["imatgen", "ccdcgan"])
def test_generate_with_baseline_models(model, tmp_path, capsys):
    missing = [f for f in BASELINE_FILES + NEEDED if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    out = tmp_path / model
    assert main(["generate", "--model", model, "--n", "8", "--out", str(out), "--no-novelty", "--keep-all"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == model and summary["n_requested"] == 8
    table = pd.read_csv(out / "candidates.csv")
    assert len(table) == 8 and table["condition"].isna().all()
    written = [f for f in table["file"].fillna("") if f]
    assert written and all((out / f).exists() for f in written)
    assert (out / "density_slices.png").exists()
    # not property-conditioned: --condition is refused with a reason, nothing written
    bad = tmp_path / "bad"
    assert main(["generate", "--model", model, "--n", "4", "--condition", "3", "--out", str(bad)]) != 0
    assert "--condition needs --model cond-dfc-vae" in capsys.readouterr().err
    assert not (bad / "summary.json").exists()


def test_ccdcgan_has_no_around(tmp_path, capsys, perovskite):
    missing = [f for f in BASELINE_FILES + NEEDED if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    cif = tmp_path / "base.cif"
    perovskite.to(filename=str(cif))
    assert main(["generate", "--model", "ccdcgan", "--around", str(cif), "--n", "4", "--out",
                 str(tmp_path / "o")]) != 0
    assert "no encoder" in capsys.readouterr().err


def test_reconstruct_command_reports_every_metric(tmp_path, perovskite, rocksalt):
    missing = [f for f in NEEDED[:4] if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    bad = "data_global\n_cell_length_a 3\n"
    pd.DataFrame({"material_id": ["srtio3", "nacl", "broken"],
                  "cif": [perovskite.to(fmt="cif"), rocksalt.to(fmt="cif"), bad]}).to_csv(tmp_path / "x.csv", index=False)
    out = tmp_path / "rec.json"
    assert main(["reconstruct", str(tmp_path / "x.csv"), "--json", str(out), "--position-steps", "5",
                 "--exact-fit-steps", "5", "--element-refit-above", "1.0", "--element-refit-rounds", "2",
                 "--element-refit-fits", "3"]) == 0
    res = json.loads(out.read_text())
    for key in ("n", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy", "match_rate", "failures",
                "unet_nonzero_recall", "vae_mse", "vae_density_mse", "mean_map_density_mse", "true_maps",
                "decoded_true_occupancy", "segmentation_only", "latent_residual", "refine", "cell_from"):
        assert key in res, key
    assert res["n"] == 3 and res["refine"]["top_k"] == 8 and res["latent_residual"] >= 0
    assert res["refine"]["position_steps"] == 5
    # the first reading is scored too, before crystals left far from their codes are read again
    assert res["refine"]["restart_above"] == ConsistencyConfig().restart_above
    assert set(res["without_restart"]) == {"match_rate", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy"}
    assert 0 <= res["restarted"]["second_reading_kept"] <= res["restarted"]["crystals"] <= 2
    # the exact fit runs and is counted, the element refit is wired (no crystal ends a whole 1.0 from its code)
    assert res["refine"]["exact_fit_steps"] == 5 and res["refine"]["element_refit_above"] == 1.0
    assert res["refine"]["element_refit_rounds"] == 2 and res["refine"]["site_refit"] is True
    assert res["refine"]["element_refit_fits"] == 3
    assert set(res["without_exact_fit"]) == set(res["without_restart"])
    fit = res["exact_fit"]
    assert fit["refit"] == fit["refit_kept"] == 0 and 0 <= fit["exact_first"] <= fit["exact"] <= fit["crystals"] <= 2
    assert res["cell_from"] == "latent"
    # one row per decoded crystal, so the misses can be looked at
    assert len(res["crystals"]) == res["n_decoded"] and {c["id"] for c in res["crystals"]} <= {"srtio3", "nacl"}
    assert all(c["match"] in (True, False) and c["code_distance"] >= 0 for c in res["crystals"])
    assert [f["id"] for f in res["failures"] if f["reason"] != "decode_failed"] == ["broken"]
    assert 0 <= res["unet_nonzero_recall"] <= 1 and res["vae_density_mse"] > 0
    by_el = res["unet_recall_by_element"]
    assert set(by_el) == {"Sr", "Ti", "O", "Na", "Cl"}
    assert sum(v["voxel_share"] for v in by_el.values()) == pytest.approx(1)
    # the per-element recalls, weighted by their voxels, are the overall recall
    assert sum(v["voxel_share"] * v["recall"] for v in by_el.values()) == pytest.approx(res["unet_nonzero_recall"])
    # two crystals: their mean map misses each by half their difference
    from icsg.data.filters import FilterConfig, standardise
    from icsg.grid import GridSpec
    from icsg.representation.density import encode

    spec = GridSpec.from_dict(json.loads((WEIGHTS_DIR / "vae.json").read_text())["grid"])
    m = [encode(standardise(s, i, FilterConfig()), spec).density for i, s in (("a", perovskite), ("b", rocksalt))]
    assert res["mean_map_density_mse"] == pytest.approx(np.mean((m[0] - m[1]) ** 2) / 4, rel=1e-4)


def test_weights_without_a_prior_still_encode_and_name_the_missing_file(generator, tmp_path, perovskite):
    from icsg.errors import WeightsError
    from icsg.generation.generator import Generator

    for f in ("unet.weights.h5", "unet.json", "vae.weights.h5", "vae.json"):
        (tmp_path / f).symlink_to(WEIGHTS_DIR / f)
    with pytest.raises(WeightsError, match="vae_cell.npz: latent cell readout missing"):
        Generator(tmp_path, predict=False, batch_size=2, rotations=1, refine=False).around(perovskite, 1)
    gen = Generator(tmp_path, predict=False, batch_size=2, rotations=1, refine=False, cell_from="coords")
    assert len(gen.around(perovskite, 1, condition=3)) == 1
    with pytest.raises(WeightsError, match="vae_prior.npz: latent prior missing"):
        gen.sample(1, condition=3)
    assert len(Generator(tmp_path, predict=False, rotations=1, prior="standard", refine=False,
                         cell_from="coords").sample(1, condition=3)) == 1


def test_recall_by_element_names_what_each_element_is_read_as():
    from collections import Counter

    from icsg.evaluation.reconstruct import _confusion, recall_by_element

    true = np.array([[0, 38, 38, 38, 38], [8, 8, 8, 8, 0]])
    pred = np.array([[0, 38, 20, 20, 0], [8, 8, 8, 8, 38]])
    counts = Counter()
    _confusion(pred, true, counts)
    out = recall_by_element(counts)
    assert set(out) == {"O", "Sr"}
    assert out["Sr"] == {"voxel_share": 0.5, "recall": 0.25, "read_as": "Ca", "read_as_share": 0.5}
    assert out["O"] == {"voxel_share": 0.5, "recall": 1.0, "read_as": None, "read_as_share": 0.0}
