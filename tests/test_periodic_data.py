"""Any-lattice datasets: `icsg prepare --encoding periodic`, exact origin/inversion augmentation, filled property."""
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from icsg.data.dataset import PrepareConfig, VoxelDataset, load_arrays, prepare
from icsg.data.sources import iter_source
from icsg.representation.augment import PeriodicMove, move_fractions, move_periodic_map
from icsg.representation.periodic import PeriodicGrid, encode_periodic, lattice_from_coordinates, render_periodic

GRID = PeriodicGrid(size=16)


def _crystals():
    wurtzite = Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                         [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])
    mono = Structure(Lattice.monoclinic(5.1, 4.3, 6.7, 103.0), ["Zr", "Zr", "O", "O", "O", "O"],
                     [[0.276, 0.040, 0.209], [0.724, 0.540, 0.291], [0.070, 0.332, 0.345],
                      [0.930, 0.832, 0.155], [0.450, 0.757, 0.479], [0.550, 0.257, 0.021]])
    big = wurtzite * (2, 2, 2)  # 32 sites: over the 20-site limit
    return [wurtzite, mono, big]


def _csv(tmp_path, n=8):
    rows = []
    for i in range(n):
        s = _crystals()[i % 3].copy()
        s.scale_lattice(s.volume * (1 + 0.01 * i))
        rows.append({"material_id": f"m{i}", "cif": s.to(fmt="cif"), "e": float(i) if i % 4 else float("nan")})
    path = tmp_path / "mix.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_periodic_dataset_takes_any_lattice_and_names_what_it_rejects(tmp_path):
    out = tmp_path / "ds"
    man = prepare(list(iter_source(str(_csv(tmp_path)))), out, GRID, cfg=PrepareConfig(property="e", val_fraction=0.3),
                  workers=1, progress=False)
    assert man["encoding"] == "periodic" and man["grid"]["encoding"] == "periodic"
    assert man["n_encoded"] == 6 and man["rejected"]["counts"] == {"too_many_atoms": 2}
    a = load_arrays(out)
    assert a["density"].shape == (6, 16, 16, 16) and a["site_Z"].shape == (6, 20)
    hexagonal = a["angles_deg"][0]
    assert np.allclose(sorted(hexagonal), [90, 90, 120], atol=1e-4)
    assert not a["prop_predicted"].any()


def test_origin_moves_and_inversion_are_exact_symmetries_of_the_map():
    s = encode_periodic(_crystals()[1], GRID).structure
    z = [site.specie.Z for site in s]
    dens, lab = render_periodic(s.frac_coords, z, s.lattice.matrix, GRID)
    for move in (PeriodicMove((3, 0, 11), False), PeriodicMove((0, 5, 2), True)):
        moved = move_fractions(s.frac_coords, move, GRID.size)
        d2, l2 = render_periodic(moved, z, s.lattice.matrix, GRID)
        assert np.allclose(move_periodic_map(dens, move), d2, atol=1e-5)
        assert (move_periodic_map(lab, move) == l2).mean() > 0.999  # ties between equidistant atoms may differ


def test_periodic_batches_carry_the_lattice_in_the_coordinate_channels(tmp_path):
    out = tmp_path / "ds"
    prepare(list(iter_source(str(_csv(tmp_path)))), out, GRID, cfg=PrepareConfig(property="e", val_fraction=0.3),
            workers=1, progress=False)
    ds = VoxelDataset(out, "train", "vae", batch_size=2, seed=3)
    (x, cond), y = ds[0]
    assert x.shape == (2, 16, 16, 16, 4) and cond.shape == (2, 10)
    j = ds._indices(0)[0]
    lat = Lattice.from_parameters(*ds.arrays["abc_A"][j], *ds.arrays["angles_deg"][j])
    assert np.allclose(lattice_from_coordinates(x[0, ..., 1:], GRID), lat.matrix, atol=1e-4)
    m, labels = VoxelDataset(out, "train", "unet", batch_size=2)[0]
    assert m.shape == (2, 16, 16, 16, 1) and labels["species"].shape == (2, 16, 16, 16)
    (zs, fr, cell), y = VoxelDataset(out, "train", "readout", batch_size=2, shuffle=False)[0]
    assert cell.shape == (2, 6) and np.allclose(cell[:, 3:], y["angles_deg"]) and np.allclose(cell[:, :3], y["abc_A"])


def test_fill_property_marks_the_predicted_values(tmp_path):
    from icsg.predict import fill_property
    from icsg.pretrained import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "cgcnn_formation_energy_per_atom.pt").exists():
        pytest.skip("shipped CGCNN weights not found")
    recs = list(iter_source(str(_csv(tmp_path, n=4))))
    for r in recs:
        r.properties["formation_energy_per_atom"] = r.properties["e"]
    n = fill_property(recs, "formation_energy_per_atom")
    assert n == 1 and recs[0].properties["formation_energy_per_atom_predicted"] == 1
    assert np.isfinite(recs[0].properties["formation_energy_per_atom"])
    assert "formation_energy_per_atom_predicted" not in recs[1].properties
    out = tmp_path / "filled"
    prepare(recs, out, GRID, cfg=PrepareConfig(property="formation_energy_per_atom", val_fraction=0.0), workers=1,
            progress=False)
    a = load_arrays(out)
    assert a["prop_predicted"].tolist() == [True, False, False] and a["manifest"]["condition"]["n_predicted"] == 1


def test_periodic_networks_commute_with_origin_moves():
    """With circular padding a move of the origin by whole pooling cells moves the UNet's output with it."""
    import keras

    from icsg.models.unet import UNetConfig, build_unet

    unet = build_unet(UNetConfig(n_classes=5, grid_size=16, base_filters=4, depth=2, periodic=True))
    x = np.random.default_rng(0).random((1, 16, 16, 16, 1)).astype("float32")
    shifted = np.roll(x, (4, 8, 12), axis=(1, 2, 3))
    a = keras.ops.convert_to_numpy(unet(x, training=False)["species"])
    b = keras.ops.convert_to_numpy(unet(shifted, training=False)["species"])
    assert np.allclose(np.roll(a, (4, 8, 12), axis=(1, 2, 3)), b, atol=1e-5)


def test_the_periodic_models_train_and_reconstruct_from_the_commands(tmp_path):
    """prepare --encoding periodic -> train-unet -> train-vae (circular padding from the manifest) ->
    reconstruct_periodic on the held-out part; one short epoch each, so only the wiring is checked."""
    import json

    from icsg.cli import main
    from icsg.evaluation.reconstruct_periodic import dataset_records, reconstruct_periodic

    ds = tmp_path / "ds"
    assert main(["prepare", str(_csv(tmp_path, n=12)), "--out", str(ds), "--encoding", "periodic", "--property", "e",
                 "--val-fraction", "0.3", "--grid-size", "16", "--workers", "1"]) == 0
    quick = ["--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--val-limit", "2", "--quiet"]
    assert main(["train-unet", str(ds), "--out", str(tmp_path / "unet"), "--base-filters", "4", "--depth", "2"]
                + quick) == 0
    assert json.loads((tmp_path / "unet" / "model.json").read_text())["config"]["periodic"] is True
    assert main(["train-vae", str(ds), "--unet", str(tmp_path / "unet"), "--out", str(tmp_path / "vae"),
                 "--latent", "8", "--filters", "4,8"] + quick) == 0
    recs = dataset_records(ds, "val")
    assert len(recs) == json.loads((ds / "manifest.json").read_text())["n_val"] > 0
    res = reconstruct_periodic(recs, tmp_path / "vae", tmp_path / "unet", workers=1, progress=False)
    assert res["n"] == len(recs) and 0.0 <= res["match_rate"] <= 1.0 and res["crystals_per_s"] > 0
    w = tmp_path / "weights"  # a weights folder of periodic models: `icsg reconstruct` takes that route
    for name in ("unet", "vae"):
        assert main(["ship-weights", str(tmp_path / name), "--name", name, "--to", str(w), "--recalibrate", str(ds)]) == 0
    assert main(["reconstruct", str(_csv(tmp_path, n=3)), "--weights", str(w), "--json", str(tmp_path / "r.json")]) == 0
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["n"] == 3 and rec["rejected"] == {"too_many_atoms": 1}
    assert main(["fit-latent-prior", str(ds), "--weights", str(w), "--maps", "20"]) == 0
    assert main(["generate", "--weights", str(w), "--n", "4", "--condition", "2", "--out", str(tmp_path / "gen")]) == 0
    gen = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert gen["model"] == "periodic" and gen["n_requested"] == 4 and gen["read"] + len(gen["failures"]) == 4
    # options of the perovskite generator are refused by name
    assert main(["generate", "--weights", str(w), "--guide", "3", "--out", str(tmp_path / "gen2")]) == 2
