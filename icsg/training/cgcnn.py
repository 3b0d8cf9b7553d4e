"""Data, training and baselines of the CGCNN property models (``icsg train-cgcnn``).

Splits are fixed per material id (sha256 of the id): 80 % train, 10 % validation,
10 % test. Graph construction is cached per source file under the cache folder
(tensors only, read back with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from icsg.data.sources import parse_cif
from icsg.errors import CrystalError, SourceError
from icsg.metrics import smape_percent
from icsg.io import atomic_path, atomic_write_json
from icsg.models.cgcnn import CGCNN, CGCNNConfig
from icsg.training.config import CGCNNTrainConfig
from icsg.models.graphs import GraphConfig, n_atom_features, structure_to_graph
from icsg.properties import PROPERTIES, PropertySpec, default_data_root


def split3(material_id: str, seed: int = 0) -> int:
    """0 train (80 %), 1 validation (10 %), 2 test (10 %); fixed by the id."""
    h = hashlib.sha256(f"cgcnn{seed}:{material_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    return 2 if u < 0.1 else (1 if u < 0.2 else 0)


def _graph_to_dict(g: Data) -> dict:
    return {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr}


def cached_graphs(csv_path: Path, cache_dir: Path, gcfg: GraphConfig = GraphConfig(), progress: bool = True) -> dict:
    """{material_id: graph dict} for every parseable row of ``csv_path`` (cached)."""
    key = hashlib.sha256(f"{csv_path.resolve()}:{csv_path.stat().st_size}:{asdict(gcfg)}".encode()).hexdigest()[:16]
    cache = cache_dir / f"graphs_{csv_path.name.split('.')[0]}_{key}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    df = pd.read_csv(csv_path)
    out = {}
    for row in tqdm(df.to_dict("records"), desc=f"graphs {csv_path.parent.name}/{csv_path.name}",
                    disable=not progress, unit="crystal"):
        rid = str(row.get("material_id"))
        try:
            s = parse_cif(row["cif"], f"{csv_path.name}:{rid}")
            out[rid] = _graph_to_dict(structure_to_graph(s, gcfg))
        except (CrystalError, ValueError):
            continue
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache, suffix=".pt") as tmp:
        torch.save(out, tmp)
    return out


def property_table(prop: PropertySpec, data_root: Path) -> pd.DataFrame:
    """(source, material_id, value) rows for one property, non-finite and (log) non-positive dropped."""
    frames = []
    for rel, col in prop.sources:
        path = data_root / rel
        if not path.exists():
            raise SourceError(f"{path}: missing (the {prop.name} data)")
        df = pd.read_csv(path, usecols=lambda c: c in ("material_id",) or c in (col if isinstance(col, tuple) else (col,)))
        val = df[list(col)].min(axis=1) if isinstance(col, tuple) else df[col]
        frames.append(pd.DataFrame({"source": rel, "material_id": df["material_id"].astype(str), "value": val}))
    t = pd.concat(frames, ignore_index=True)
    t = t[np.isfinite(t["value"])]
    if prop.log10:
        t = t[t["value"] > 0]
    return t.reset_index(drop=True)


@dataclass
class PropertyData:
    prop: PropertySpec
    graphs: list  # Data objects with y (transformed, unstandardised)
    ids: list
    sources: list
    split: np.ndarray
    y_raw: np.ndarray


def load_property_data(name: str, data_root: Path | None = None, cache_dir: Path = Path("runs/cache"),
                       seed: int = 0, progress: bool = True) -> PropertyData:
    prop = PROPERTIES[name]
    root = data_root or default_data_root()
    table = property_table(prop, root)
    graphs, ids, srcs, ys = [], [], [], []
    for rel in dict.fromkeys(table["source"]):
        g = cached_graphs(root / rel, cache_dir, progress=progress)
        sub = table[table["source"] == rel]
        for rid, v in zip(sub["material_id"], sub["value"]):
            if rid in g:
                d = Data(**g[rid], y=torch.tensor([float(prop.transform(v))], dtype=torch.float32))
                graphs.append(d), ids.append(rid), srcs.append(rel), ys.append(float(v))
    split = np.array([split3(f"{s}:{i}", seed) for s, i in zip(srcs, ids)])
    return PropertyData(prop, graphs, ids, srcs, split, np.array(ys))


def _mae(model, loader, mean, std) -> tuple[float, np.ndarray, np.ndarray]:
    model.eval()
    preds, ys = [], []
    with torch.no_grad():
        for b in loader:
            preds.append(model(b) * std + mean)
            ys.append(b.y)
    p, y = torch.cat(preds).numpy(), torch.cat(ys).numpy()
    return float(np.mean(np.abs(p - y))), p, y


def train_cgcnn(data: PropertyData, out_dir: Path, cfg: CGCNNTrainConfig = CGCNNTrainConfig(),
                init_from: Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train one property model; returns metrics. ``init_from`` = formation-energy run to fine-tune from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    tr = [g for g, s in zip(data.graphs, data.split) if s == 0]
    va = [g for g, s in zip(data.graphs, data.split) if s == 1]
    if len(tr) < 10 or len(va) < 2:
        raise SourceError(f"{data.prop.name}: too few crystals ({len(tr)} train, {len(va)} validation)")
    y_tr = torch.cat([g.y for g in tr])
    mean, std = float(y_tr.mean()), float(y_tr.std()) + 1e-8
    mcfg = CGCNNConfig(n_atom_features(), tr[0].edge_attr.shape[1], hidden=cfg.hidden, n_conv=cfg.n_conv)
    model = CGCNN(mcfg)
    lr = cfg.lr
    if init_from is not None:
        src = torch.load(Path(init_from) / "best.pt", weights_only=True)
        missing = model.load_state_dict({k: v for k, v in src["model"].items() if k.startswith(("embed.", "convs."))},
                                        strict=False)
        assert not [k for k in missing.unexpected_keys]
        lr = cfg.finetune_lr
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(3, cfg.patience // 3))
    if cfg.loss not in ("mse", "l1"):
        raise ValueError(f"loss must be 'mse' or 'l1', got {cfg.loss!r}")
    loss_fn = torch.nn.functional.mse_loss if cfg.loss == "mse" else torch.nn.functional.l1_loss
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(tr, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    val_loader = DataLoader(va, batch_size=256)
    state = {"epoch": 0, "best": float("inf"), "best_epoch": 0, "bad": 0, "seconds": 0.0}
    if resume and (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", weights_only=True)
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        state = json.loads((out / "state.json").read_text())
        gen.manual_seed(cfg.seed + state["epoch"])
    meta = {"kind": "cgcnn", "property": data.prop.name, "unit": data.prop.unit, "log10": data.prop.log10,
            "config": mcfg.to_dict(), "graph": asdict(GraphConfig()), "target_mean": mean, "target_std": std,
            "train": asdict(cfg), "init_from": str(init_from) if init_from else None,
            "n_train": len(tr), "n_val": len(va), "n_test": int((data.split == 2).sum())}
    atomic_write_json(out / "model.json", meta)
    log_path = out / "log.csv"
    if state["epoch"] == 0 and log_path.exists():
        log_path.unlink()
    bar = tqdm(range(state["epoch"], cfg.epochs), desc=f"cgcnn {data.prop.name}", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for b in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(b), (b.y - mean) / std)
            loss.backward()
            opt.step()
            total += float(loss) * b.num_graphs
        val_mae, _, _ = _mae(model, val_loader, mean, std)
        sched.step(val_mae)
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - t0
        if val_mae < state["best"]:
            state.update(best=val_mae, best_epoch=epoch + 1, bad=0)
            with atomic_path(out / "best.pt", suffix=".pt") as tmp:
                torch.save({"model": model.state_dict()}, tmp)
        else:
            state["bad"] += 1
        with atomic_path(out / "last.pt", suffix=".pt") as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, tmp)
        atomic_write_json(out / "state.json", state)
        new = not log_path.exists()
        with open(log_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "train_mse_std", "val_mae_transformed", "lr"])
            w.writerow([epoch + 1, total / len(tr), val_mae, opt.param_groups[0]["lr"]])
        bar.set_postfix(train=f"{total / len(tr):.3f}", val_mae=f"{val_mae:.4f}")
        if state["bad"] >= cfg.patience:
            break
    return state


def load_cgcnn(location: Path) -> tuple[CGCNN, dict]:
    """(model, meta) from a run folder (model.json + best.pt) or weights/cgcnn_<prop>.{json,pt}."""
    from icsg.errors import WeightsError

    location = Path(location)
    if location.is_dir():
        meta_path, w = location / "model.json", location / "best.pt"
    else:
        meta_path, w = location.with_suffix(".json"), location
    for p in (meta_path, w):
        if not p.exists():
            raise WeightsError(f"{p}: missing")
    meta = json.loads(meta_path.read_text())
    model = CGCNN(CGCNNConfig(**meta["config"]))
    try:
        state = torch.load(w, weights_only=True)
        model.load_state_dict(state["model"] if "model" in state else state)
    except Exception as exc:
        raise WeightsError(f"{w}: cannot load CGCNN weights ({type(exc).__name__}: {str(exc)[:200]})") from None
    model.eval()
    return model, meta


def evaluate(model: CGCNN, meta: dict, data: PropertyData, split: int = 2) -> dict:
    """MAE and SMAPE in the property's own units on one split."""
    graphs = [g for g, s in zip(data.graphs, data.split) if s == split]
    idx = np.where(data.split == split)[0]
    loader = DataLoader(graphs, batch_size=256)
    _, p, _ = _mae(model, loader, meta["target_mean"], meta["target_std"])
    pred = data.prop.inverse(p)
    true = data.y_raw[idx]
    return {"mae": float(np.mean(np.abs(pred - true))),
            "smape": smape_percent(pred, true),
            "n": int(len(idx)), "pred": pred, "true": true}


def magpie_features(data: PropertyData, data_root: Path | None = None) -> np.ndarray:
    """Magpie composition statistics + density features (matminer), for the random-forest baseline."""
    from matminer.featurizers.composition import ElementProperty
    from matminer.featurizers.structure import DensityFeatures
    from pymatgen.core import Structure

    root = data_root or default_data_root()
    ep = ElementProperty.from_preset("magpie")
    df_feat = DensityFeatures()
    feats = []
    cifs = {}
    for rel in dict.fromkeys(data.sources):
        df = pd.read_csv(root / rel, usecols=["material_id", "cif"])
        cifs[rel] = dict(zip(df["material_id"].astype(str), df["cif"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rel, rid in tqdm(list(zip(data.sources, data.ids)), desc="magpie features", unit="crystal"):
            s = Structure.from_str(cifs[rel][rid], fmt="cif")
            try:
                dens = df_feat.featurize(s)
            except Exception:
                dens = [np.nan] * 3
            feats.append(list(ep.featurize(s.composition)) + list(dens))
    x = np.array(feats, dtype=float)
    return np.nan_to_num(x, nan=0.0)


def ship(run: Path, weights_dir: Path, extra: dict | None = None) -> Path:
    """Copy a run's best model to weights/cgcnn_<prop>.pt + .json (state dict only, tensors)."""
    from icsg.pretrained import sha256

    meta = json.loads((run / "model.json").read_text())
    state = torch.load(run / "best.pt", weights_only=True)
    dest = Path(weights_dir) / f"cgcnn_{meta['property']}.pt"
    with atomic_path(dest, suffix=".pt") as tmp:
        torch.save(state["model"], tmp)
    meta.update(extra or {})
    meta["sha256"] = sha256(dest)
    atomic_write_json(dest.with_suffix(".json"), meta)
    return dest


# Trained from scratch only: the two energies (the paper's), and the perovskite heat of formation that
# conditions the VAE (not one of the paper's eight; its 15k perovskites need no transfer).
SCRATCH_ONLY = ("formation_energy_per_atom", "energy_per_atom", "heat_ref")
# Cheap properties first so the long ones (15-17k crystals) come last.
TRAIN_ORDER = ("formation_energy_per_atom", "energy_per_atom", "bulk_modulus", "shear_modulus", "poisson_ratio",
               "refractive_index", "dielectric_constant", "heat_ref", "band_gap")


def train_all(out_root: Path, props: list[str], cfg: CGCNNTrainConfig, resume: bool, ship_to: Path | None,
              data_root: Path | None = None, cache_dir: Path = Path("runs/cache")) -> dict:
    """SCRATCH_ONLY properties from scratch; every other property both from scratch and fine-tuned from
    the formation-energy model, keeping the one with the lower validation MAE."""
    summary = {}
    base = out_root / "formation_energy_per_atom"
    for name in props:
        data = load_property_data(name, data_root, cache_dir, cfg.seed)
        runs = {"scratch": out_root / name}
        if name not in SCRATCH_ONLY:
            runs["finetuned"] = out_root / f"{name}_ft"
        results = {}
        for mode, run in runs.items():
            if mode == "finetuned" and not (base / "best.pt").exists():
                continue
            train_cgcnn(data, run, cfg, init_from=base if mode == "finetuned" else None, resume=resume)
            model, meta = load_cgcnn(run)
            results[mode] = {"run": str(run), "val_mae": evaluate(model, meta, data, 1)["mae"]}
        chosen = min(results, key=lambda k: results[k]["val_mae"])
        summary[name] = {"chosen": chosen, **{k: v for k, v in results.items()}}
        print(f"{name}: " + ", ".join(f"{k} val MAE {v['val_mae']:.4f}" for k, v in results.items())
              + f" -> {chosen}", flush=True)
        if ship_to is not None:
            ship(Path(results[chosen]["run"]), ship_to, {"chosen_over": results})
    atomic_write_json(out_root / "summary.json", summary)
    return summary


def run_cli(a) -> int:
    torch.set_num_threads(a.threads)
    cfg = CGCNNTrainConfig(epochs=a.epochs, batch_size=a.batch, lr=a.lr, patience=a.patience, seed=a.seed,
                           n_conv=a.n_conv, loss=a.loss)
    root = Path(a.data_root) if a.data_root else None
    if a.property == "all" or "," in a.property:
        props = list(TRAIN_ORDER) if a.property == "all" else [p for p in a.property.split(",") if p]
        unknown = [p for p in props if p not in PROPERTIES]
        if unknown:
            raise SourceError(f"unknown properties {unknown} (choose from {', '.join(PROPERTIES)})")
        train_all(Path(a.out), props, cfg, a.resume, Path(a.ship) if a.ship else None, root)
        return 0
    if a.property not in PROPERTIES:
        raise SourceError(f"unknown property '{a.property}' (choose from all, {', '.join(PROPERTIES)})")
    data = load_property_data(a.property, root, seed=a.seed)
    run = Path(a.out) / a.property
    state = train_cgcnn(data, run, cfg, init_from=Path(a.finetune_from) if a.finetune_from else None, resume=a.resume)
    print(f"{a.property}: best validation MAE (transformed units) {state['best']:.4f} at epoch {state['best_epoch']}")
    if a.ship:
        print("shipped", ship(run, Path(a.ship)))
    return 0
