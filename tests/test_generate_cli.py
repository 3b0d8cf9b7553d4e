"""The main job on the shipped weights: every sampling mode with a small n, and every bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from icsg.cli import main
from icsg.generation.search_config import ConsistencyConfig
from icsg.pretrained import WEIGHTS_DIR

NEEDED = ["unet.weights.h5", "unet.json", "vae.weights.h5", "vae.json", "readout.weights.h5", "readout.json",
          "vae_prior.npz", "vae_cell.npz", "cgcnn_heat_ref.pt", "cgcnn_band_gap.pt"]
CODEC = ["unet.weights.h5", "unet.json", "vae.weights.h5", "vae.json", "readout.weights.h5", "readout.json"]


@pytest.fixture(scope="module")
def generator():
    missing = [f for f in NEEDED if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    from icsg.generation.generator import Generator

    return Generator(seed=0, batch_size=8)


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


def test_random_samples_come_from_the_shipped_priors(generator):
    from icsg.generation.flow_prior import load_flow_prior
    from icsg.generation.generator import Generator
    from icsg.pretrained import read_description, sha256

    flow = generator.latent_prior  # the default: the flow-matching prior of these weights
    assert flow.cfg.dim == generator.latent_dim and flow.n_bins == generator.n_bins
    assert read_description(WEIGHTS_DIR / "flow_prior.json", "")["sha256"] == sha256(WEIGHTS_DIR / "flow_prior.pt")
    rng_state = generator.rng.bit_generator.state
    z = np.stack(generator.sample(2, condition=5)["z"].to_list())
    generator.rng.bit_generator.state = rng_state
    expect = load_flow_prior(WEIGHTS_DIR).sample(2, generator.rng, condition=5)
    assert np.allclose(z, expect, atol=1e-5)
    fitted = Generator(predict=False, prior="fitted").latent_prior
    assert fitted.mean.shape == (generator.n_bins, generator.latent_dim)
    meta = read_description(WEIGHTS_DIR / "readout.json", "")
    assert meta["latent_prior"]["sha256"] == sha256(WEIGHTS_DIR / "vae_prior.npz")  # the prior of these weights


def test_generate_cli_writes_outputs(generator, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--n", "3", "--condition", "4", "--out", str(out), "--no-novelty", "--keep-all"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_requested"] == 3 and "funnel" in summary and summary["crystals_per_second"] > 0
    assert summary["reading"] == "fast"
    table = pd.read_csv(out / "candidates.csv")
    assert len(table) == 3 and "heat_ref" in table.columns
    assert len(list(out.glob("*.cif"))) == summary["cif_files"]
    assert (out / "density_slices.png").stat().st_size > 0
    assert summary["prior"] == "flow (temperature 1.0, guide 1)"
    out2 = tmp_path / "gen_standard"
    assert main(["generate", "--n", "2", "--prior", "standard", "--out", str(out2), "--no-novelty"]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["prior"] == "standard (temperature 1.0, guide 1)"


def test_fast_reading_recovers_a_perovskite_from_its_code(generator, perovskite):
    """The heads must give SrTiO3's composition and cell from its code, and the reading its structure."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    z, k = generator.encode(perovskite, condition=4)
    counts, _, cell, _ = generator.codec.heads(generator.codec.split(z[None])[1])
    els = generator.codec.readout_cfg.elements_Z
    assert {els[i]: int(c) for i, c in enumerate(counts[0]) if c} == {38: 1, 22: 1, 8: 3}
    assert np.allclose(cell[0], 3.905, atol=0.05)
    s = generator.decode(z[None], np.eye(generator.n_bins)[[k]], [k])["structure"].iloc[0]
    assert s is not None and StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10).fit(perovskite, s)


def test_exact_reading_is_opt_in(generator, perovskite):
    """reading='exact' runs the per-crystal search through the encoder (a light setting here: it costs seconds)."""
    from icsg.generation.generator import Generator

    assert generator.reading == "fast"
    z, k = generator.encode(perovskite, condition=4)
    exact = Generator(predict=False, batch_size=2, reading="exact",
                      exact=ConsistencyConfig(top_k=2, rounds=1, species_passes=1, soft_steps=0, position_steps=0,
                                              restart_above=None, exact_fit_steps=0, element_refit_above=None))
    df = exact.decode(z[None], np.eye(exact.n_bins)[[k]], [k])
    assert df["structure"].iloc[0] is not None
    with pytest.raises(ValueError, match="reading must be one of"):
        Generator(predict=False, reading="slow")


@pytest.mark.parametrize("args,message", [
    (["--condition", "12"], "condition must be an integer bin"),
    (["--target", "1e6"], "outside the training range"),
    (["--n", "0"], "--n must be positive"),
    (["--around", "missing.cif"], "missing.cif: no such file"),
    (["--around", "no-such-id", "--data", "{csv}"], "id 'no-such-id' not found"),
    (["--model", "imatgen", "--reading", "exact"], "--reading applies to --model cond-dfc-vae only"),
    (["--model", "ccdcgan", "--temperature", "0.5"], "--temperature applies to --model cond-dfc-vae only"),
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
    missing = [f for f in CODEC if not (WEIGHTS_DIR / f).exists()]
    if missing:
        pytest.skip(f"shipped weights missing: {missing}")
    bad = "data_global\n_cell_length_a 3\n"
    pd.DataFrame({"material_id": ["srtio3", "nacl", "broken"],
                  "cif": [perovskite.to(fmt="cif"), rocksalt.to(fmt="cif"), bad]}).to_csv(tmp_path / "x.csv", index=False)
    out = tmp_path / "rec.json"
    assert main(["reconstruct", str(tmp_path / "x.csv"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("n", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy", "match_rate", "failures",
                "readout_composition_accuracy", "readout_cell_mae_A", "crystals_per_second", "peak_rss_gb"):
        assert key in res, key
    assert res["n"] == 3 and res["reading"] == "fast"
    assert [f["id"] for f in res["failures"] if f["reason"] != "decode_failed"] == ["broken"]
    # one row per accepted crystal, so the misses can be looked at; SrTiO3 is a perovskite of the training kind
    rows = {c["id"]: c for c in res["crystals"]}
    assert set(rows) == {"srtio3", "nacl"} and rows["srtio3"]["match"] is True
    assert 0 <= res["readout_composition_accuracy"] <= 1 and res["peak_rss_gb"] > 0


def test_weights_without_a_prior_still_encode_and_name_the_missing_file(generator, tmp_path, perovskite):
    from icsg.errors import WeightsError
    from icsg.generation.generator import Generator

    for f in CODEC:
        (tmp_path / f).symlink_to(WEIGHTS_DIR / f)
    gen = Generator(tmp_path, predict=False, batch_size=2)
    assert len(gen.around(perovskite, 1, condition=3)) == 1
    with pytest.raises(WeightsError, match="flow_prior.json: model description missing"):
        gen.sample(1, condition=3)
    with pytest.raises(WeightsError, match="vae_prior.npz: latent prior missing"):
        Generator(tmp_path, predict=False, prior="fitted").sample(1, condition=3)
    assert len(Generator(tmp_path, predict=False, prior="standard").sample(1, condition=3)) == 1
    (tmp_path / "readout.json").unlink()
    with pytest.raises(WeightsError, match="readout.json: model description missing"):
        Generator(tmp_path, predict=False)


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


def test_samples_keep_to_the_training_numbers_of_sites_and_guidance_keeps_the_requested_bin(generator):
    counts = generator.site_counts  # perov_5: every training crystal has 5 sites
    assert counts is not None and np.flatnonzero(counts).tolist() == [5]
    df = generator.sample(4, condition=0)
    assert (df.loc[df["structure"].notna(), "n_sites"] == 5).all()
    assert "readout_property" in df
    generator.guide = 3
    try:
        guided = generator.sample(3, condition=0)
    finally:
        generator.guide = 1
    assert len(guided) == 3 and guided["valid"].all()
    import pandas as pd

    lo = generator.cond["edges"][0]
    from pymatgen.core import Lattice, Structure

    abx3 = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    a2x3 = abx3.copy()
    a2x3.replace(1, "Sr")  # the A = B formula, 1 % of perov_5: outside the commonest formulas holding 95 %
    df = pd.DataFrame({"valid": [True, False, True, True, True, True],
                       "readout_property": [5.0, 0.0, lo - 0.01, np.nan, lo - 0.01, lo - 0.01],
                       "structure": [abx3] * 5 + [a2x3], "charge_neutral": [True] * 4 + [False, True],
                       "ionic": True})
    assert generator.typical(df).tolist() == [True, True, True, True, False, False]
    kto2f, ti2nof = abx3.copy(), abx3.copy()
    kto2f.replace(0, "K"), kto2f.replace(4, "F")
    for i, el in enumerate(["Ti", "Ti", "N", "O", "F"]):
        ti2nof.replace(i, el)  # anonymous formula (2, 1, 1, 1) like KTiO2F, but one cation on both cation sites
    mixed = pd.DataFrame({"structure": [kto2f, ti2nof], "charge_neutral": True, "ionic": True})
    assert generator.typical(mixed).tolist() == [True, False]
    # typical crystals in the bin, then nearest it, unknown; then the atypical ones; invalid last
    assert generator.rank(df, 0).tolist() == [2, 0, 3, 4, 5, 1]
    assert generator.rank(df, 0, target=5.0).tolist() == [0, 2, 3, 4, 5, 1]
    with pytest.raises(ValueError, match="guide must be an integer"):
        type(generator)(predict=False, guide=0)
