import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch

from icsg.models.cgcnn import CGCNN, CGCNNConfig
from icsg.models.graphs import GraphConfig, element_feature_table, n_atom_features, structure_to_graph


def test_graph_simple_cubic_neighbours_and_images():
    # one Po atom in a 3.0 Å simple cubic cell: 6 images at 3.0 Å, then 12 at 4.24 Å
    s = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    g = structure_to_graph(s, GraphConfig(max_neighbours=12))
    assert g.x.shape == (1, n_atom_features())
    assert g.edge_index.shape == (2, 12)
    assert torch.all(g.edge_index == 0)  # every neighbour is a periodic image of the one site
    d = np.sort(g.distances.numpy())
    assert np.allclose(d[:6], 3.0, atol=1e-5) and np.allclose(d[6:], 3.0 * np.sqrt(2), atol=1e-5)
    # Gaussian expansion peaks at the bin nearest the distance
    assert int(torch.argmax(g.edge_attr[int(np.argmin(g.distances.numpy()))])) == 15  # 3.0 / 0.2


def test_graph_cutoff_and_features(rocksalt):
    g = structure_to_graph(rocksalt, GraphConfig(max_neighbours=12, cutoff_A=3.0))
    # within 3 Å each ion sees its 6 counter-ions at 2.82 Å only
    assert g.edge_index.shape[1] == 8 * 6
    assert np.allclose(g.distances.numpy(), 2.82, atol=1e-6)
    table = element_feature_table()
    assert torch.allclose(g.x[0], torch.from_numpy(table[rocksalt[0].specie.Z]))
    assert not np.allclose(table[11], table[17])


def _toy_graphs(n=24):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = 3.5 + 1.5 * rng.random()
        s = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        g = structure_to_graph(s)
        g.y = torch.tensor([a], dtype=torch.float32)
        out.append(g)
    return out


def test_cgcnn_training_reduces_loss_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    graphs = _toy_graphs()
    b = Batch.from_data_list(graphs)
    model = CGCNN(CGCNNConfig(n_atom_features(), graphs[0].edge_attr.shape[1], hidden=16, fc_hidden=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y = (b.y - b.y.mean()) / b.y.std()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(b), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    clone = CGCNN(model.cfg)
    clone.load_state_dict(torch.load(path, weights_only=True))
    model.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(model(b), clone(b))


def test_transfer_keeps_feature_layers():
    m = CGCNN(CGCNNConfig(n_atom_features(), 41))
    keys = m.feature_extractor_state().keys()
    assert any(k.startswith("embed.") for k in keys) and any(k.startswith("convs.") for k in keys)
    assert not any(k.startswith("fc") for k in keys)


def test_band_gap_gating(tmp_path, rocksalt, perovskite):
    """Refractive index and dielectric constant are NaN where the predicted gap is (near) zero."""
    import json

    from icsg.training.cgcnn import load_cgcnn
    from icsg.predict import PropertyPredictor

    cfg = CGCNNConfig(n_atom_features(), GraphConfig().n_edge_features, hidden=8, fc_hidden=8)
    for name, mean, log10 in (("band_gap", 0.0, False), ("refractive_index", 2.0, False),
                              ("dielectric_constant", 1.0, True)):
        model = CGCNN(cfg)
        torch.save(model.state_dict(), tmp_path / f"cgcnn_{name}.pt")
        # std 0: the prediction is exactly the mean, so the gap is 0 -> gated
        (tmp_path / f"cgcnn_{name}.json").write_text(json.dumps(
            {"config": cfg.to_dict(), "target_mean": mean, "target_std": 0.0, "property": name}))
    pred = PropertyPredictor(tmp_path, properties=("band_gap", "refractive_index", "dielectric_constant"),
                             required=())
    df = pred.predict([rocksalt, perovskite])
    assert (df["band_gap"] == 0).all()
    assert df["refractive_index"].isna().all() and df["dielectric_constant"].isna().all()
    # an insulator (mean gap 3 eV) keeps both
    (tmp_path / "cgcnn_band_gap.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "target_mean": 3.0, "target_std": 0.0, "property": "band_gap"}))
    df = PropertyPredictor(tmp_path, properties=("band_gap", "refractive_index", "dielectric_constant"),
                           required=()).predict([rocksalt])
    assert df["refractive_index"].iloc[0] == pytest.approx(2.0) and df["dielectric_constant"].iloc[0] == pytest.approx(10.0)
    with pytest.raises(Exception, match="cgcnn_bulk_modulus.pt: missing"):
        PropertyPredictor(tmp_path, properties=("bulk_modulus",), required=("bulk_modulus",))
    (tmp_path / "cgcnn_band_gap.pt").write_bytes(b"garbage")
    with pytest.raises(Exception, match="cannot load CGCNN weights"):
        load_cgcnn(tmp_path / "cgcnn_band_gap.pt")


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_train_command_loss_options(tmp_path, loss):
    import json

    from icsg.training.cgcnn import CGCNNTrainConfig, PropertyData, train_cgcnn
    from icsg.properties import PROPERTIES

    graphs = _toy_graphs(24)
    split = np.array([0] * 18 + [1] * 3 + [2] * 3)
    data = PropertyData(PROPERTIES["band_gap"], graphs, [str(i) for i in range(24)], ["toy"] * 24, split,
                        np.array([float(g.y) for g in graphs]))
    cfg = CGCNNTrainConfig(epochs=8, batch_size=6, patience=20, hidden=8, loss=loss)
    state = train_cgcnn(data, tmp_path / loss, cfg, progress=False)
    log = np.loadtxt(tmp_path / loss / "log.csv", delimiter=",", skiprows=1)
    assert state["epoch"] == 8 and log[-1, 1] < log[0, 1]  # training loss falls
    assert json.loads((tmp_path / loss / "model.json").read_text())["train"]["loss"] == loss
    with pytest.raises(ValueError, match="loss must be"):
        train_cgcnn(data, tmp_path / "bad", CGCNNTrainConfig(epochs=1, loss="huber"), progress=False)


def test_train_cgcnn_command_trains_and_ships_a_loadable_model(tmp_path, monkeypatch, perovskite):
    """`icsg train-cgcnn` on a tiny data root laid out as ../shared/data: graphs, training, shipping."""
    import pandas as pd

    from icsg.cli import main
    from icsg.training.cgcnn import load_cgcnn

    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "perov_5"
    root.mkdir(parents=True)
    for split, n in (("train", 30), ("val", 10)):
        rows = []
        for i in range(n):
            s = perovskite.copy()
            s.scale_lattice(s.volume * rng.uniform(0.9, 1.1))
            s.replace(0, rng.choice(["Sr", "Ba", "Ca"]))
            rows.append({"material_id": f"{split}-{i}", "cif": s.to(fmt="cif"), "heat_ref": rng.normal(1.0, 0.3)})
        pd.DataFrame(rows).to_csv(root / f"{split}.csv.gz", index=False)
    monkeypatch.chdir(tmp_path)  # the graph cache goes to ./runs/cache
    weights = tmp_path / "weights"
    weights.mkdir()
    assert main(["train-cgcnn", "--property", "heat_ref", "--data-root", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run"), "--epochs", "3", "--batch", "8", "--ship", str(weights)]) == 0
    assert (tmp_path / "run" / "heat_ref" / "log.csv").exists()
    model, meta = load_cgcnn(weights / "cgcnn_heat_ref.pt")
    assert meta["property"] == "heat_ref" and len(list((tmp_path / "runs" / "cache").glob("graphs_*.pt"))) == 2
    assert main(["train-cgcnn", "--property", "nonsense", "--out", str(tmp_path / "r2")]) != 0
