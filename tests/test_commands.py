"""The commands end to end on tiny data: prepare -> train-unet, train-vae, train-readout -> ship-weights ->
fit-latent-prior -> reconstruct and generate from that weights folder; predict; validate without CHGNet."""
import json

import numpy as np
import pandas as pd
import pytest

from icsg.cli import main


@pytest.fixture(scope="module")
def chain(tmp_path_factory, request):
    """A weights folder made by the commands from 96 small crystals (16³ grid, 1 epoch each)."""
    from pymatgen.core import Lattice, Structure

    tmp = tmp_path_factory.mktemp("commands")
    rows = []
    for i in range(96):
        if i % 2:
            s = Structure(Lattice.cubic(3.9 + 0.005 * i), ["Sr", "Ti", "O", "O", "O"],
                          [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
        else:
            s = Structure(Lattice.cubic(4.0 + 0.005 * i), ["Cs", "Cl"], [[0, 0, 0], [.5, .5, .5]])
        rows.append({"material_id": f"m{i}", "cif": s.to(fmt="cif"), "e": float(i)})
    csv = tmp / "crystals.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    ds, w = tmp / "ds", tmp / "weights"
    quick = ["--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--val-limit", "2", "--quiet"]
    assert main(["prepare", str(csv), "--out", str(ds), "--property", "e", "--val-fraction", "0.3",
                 "--grid-size", "16", "--workers", "1"]) == 0
    assert main(["train-unet", str(ds), "--out", str(tmp / "unet"), "--base-filters", "4", "--depth", "2"] + quick) == 0
    assert main(["train-vae", str(ds), "--unet", str(tmp / "unet"), "--out", str(tmp / "vae"), "--latent", "8",
                 "--filters", "4,8"] + quick) == 0
    assert main(["train-readout", str(ds), "--out", str(tmp / "readout"), "--latent", "4"] + quick) == 0
    for name in ("unet", "vae", "readout"):
        assert main(["ship-weights", str(tmp / name), "--name", name, "--to", str(w)]) == 0
    assert main(["fit-latent-prior", str(ds), "--weights", str(w), "--maps", "200", "--flow-steps", "20"]) == 0
    import shutil

    from icsg.pretrained import WEIGHTS_DIR

    for f in WEIGHTS_DIR.glob("cgcnn_*"):  # the property models generation annotates with, as a user ships them
        shutil.copy(f, w / f.name)
    return {"tmp": tmp, "csv": csv, "ds": ds, "weights": w}


def man_train(chain) -> int:
    return json.loads((chain["ds"] / "manifest.json").read_text())["n_train"]


def test_prepare_writes_a_manifest_with_both_splits(chain):
    man = json.loads((chain["ds"] / "manifest.json").read_text())
    assert man["n_train"] + man["n_val"] == 96 and man["n_val"] > 0
    assert man["condition"]["property"] == "e"


def test_shipped_files_carry_their_checksums_and_priors(chain):
    from icsg.pretrained import sha256

    w = chain["weights"]
    for name in ("unet", "vae", "readout"):
        meta = json.loads((w / f"{name}.json").read_text())
        assert meta["sha256"] == sha256(w / f"{name}.weights.h5")
        assert meta["training"]["epochs_done"] == 1
    assert (w / "vae_prior.npz").exists() and (w / "flow_prior.pt").exists()
    readout = json.loads((w / "readout.json").read_text())
    assert readout["latent_prior"]["maps"] == man_train(chain)


def test_reconstruct_and_generate_run_from_the_new_weights(chain, capsys):
    out = chain["tmp"] / "rec.json"
    assert main(["reconstruct", str(chain["csv"]), "--weights", str(chain["weights"]), "--limit", "4",
                 "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["n"] == 4 and 0.0 <= rec["match_rate"] <= 1.0 and len(rec["crystals"]) == 4
    gen = chain["tmp"] / "gen"
    assert main(["generate", "--weights", str(chain["weights"]), "--n", "4", "--out", str(gen)]) == 0
    summary = json.loads((gen / "summary.json").read_text())
    assert summary["funnel"]["generated"] == 4 and summary["weights"] == str(chain["weights"])
    assert len(pd.read_csv(gen / "candidates.csv")) == 4


def test_predict_gives_finite_properties_with_units(tmp_path, perovskite, capsys):
    cif = tmp_path / "SrTiO3.cif"
    perovskite.to(filename=str(cif))
    out = tmp_path / "p.json"
    assert main(["predict", str(cif), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    row = rows[0] if isinstance(rows, list) else rows["predictions"][0]
    assert np.isfinite(row["formation_energy_per_atom"]) and -5 < row["formation_energy_per_atom"] < 1


def test_validate_names_a_bad_candidate_list_and_a_missing_chgnet(tmp_path, perovskite, capsys):
    (tmp_path / "candidates.csv").write_text("id,formula\n")
    assert main(["validate", str(tmp_path)]) != 0
    assert "no 'file' column" in capsys.readouterr().err
    perovskite.to(filename=str(tmp_path / "SrTiO3.cif"))
    (tmp_path / "candidates.csv").write_text("id,formula,file\n0,SrTiO3,SrTiO3.cif\n")
    try:
        import chgnet  # noqa: F401
        pytest.skip("CHGNet is installed: the missing-package path cannot be reached")
    except ImportError:
        pass
    code = main(["validate", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "chgnet" in err.lower()
