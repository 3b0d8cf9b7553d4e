"""Property prediction with the shipped CGCNN models (``icsg.predict_properties``, ``icsg predict``).

Refractive index and dielectric constant are only defined for insulators: they are
NaN where the predicted band gap is below ``gap_threshold_eV`` (the paper reports
them as NaN when the predicted gap is zero; a regressor never outputs exactly zero,
so a small threshold stands in for it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Structure
from torch_geometric.loader import DataLoader

from icsg.errors import WeightsError
from icsg.models.graphs import GraphConfig, structure_to_graph
from icsg.properties import GAP_GATED, PAPER_EIGHT, PROPERTIES
from icsg.pretrained import WEIGHTS_DIR

GAP_THRESHOLD_EV = 0.1


class PropertyPredictor:
    """All available CGCNN models of a weights folder, loaded once."""

    def __init__(self, weights_dir: str | Path = WEIGHTS_DIR, properties: tuple = PAPER_EIGHT + ("heat_ref",),
                 required: tuple = PAPER_EIGHT):
        from icsg.training.cgcnn import load_cgcnn

        self.models = {}
        for p in properties:
            path = Path(weights_dir) / f"cgcnn_{p}.pt"
            if path.exists():
                self.models[p] = load_cgcnn(path)
            elif p in required:
                raise WeightsError(f"{path}: missing (train it with 'icsg train-cgcnn --property {p} --ship "
                                   f"{weights_dir}')")
        self.graph_cfg = GraphConfig()

    def predict(self, structures: list[Structure], gap_threshold_eV: float = GAP_THRESHOLD_EV,
                batch_size: int = 256) -> pd.DataFrame:
        """One row per structure, one column per property (units in ``icsg.properties.PROPERTIES``)."""
        graphs, ok = [], []
        for s in structures:
            try:
                graphs.append(structure_to_graph(s, self.graph_cfg))
                ok.append(True)
            except Exception:  # a degenerate generated structure: all NaN for it
                ok.append(False)
        out = pd.DataFrame(index=range(len(structures)), columns=list(self.models), dtype=float)
        if graphs:
            idx = np.flatnonzero(ok)
            for name, (model, meta) in self.models.items():
                preds = []
                with torch.no_grad():
                    for b in DataLoader(graphs, batch_size=batch_size):
                        preds.append(model(b) * meta["target_std"] + meta["target_mean"])
                vals = PROPERTIES[name].inverse(torch.cat(preds).numpy())
                out.loc[idx, name] = vals
        if "band_gap" in out:
            out["band_gap"] = out["band_gap"].clip(lower=0.0)
            metal = out["band_gap"] < gap_threshold_eV
            for p in GAP_GATED:
                if p in out:
                    out.loc[metal, p] = np.nan
        return out


_DEFAULT: dict = {}


def predict_properties(structures, weights_dir: str | Path = WEIGHTS_DIR) -> pd.DataFrame:
    """Eight properties (plus the perovskite heat of formation when shipped) for pymatgen structures."""
    if isinstance(structures, Structure):
        structures = [structures]
    key = str(weights_dir)
    if key not in _DEFAULT:
        _DEFAULT[key] = PropertyPredictor(weights_dir)
    return _DEFAULT[key].predict(list(structures))


def fill_property(records: list, prop: str, weights_dir: str | Path = WEIGHTS_DIR) -> int:
    """Give every readable record without a finite ``prop`` the shipped CGCNN's prediction of it, marked
    ``properties[prop + '_predicted'] = 1`` (``icsg prepare --fill-property``); returns how many were filled."""
    missing = [r for r in records if r.error is None and not np.isfinite(float(r.properties.get(prop, np.nan)))]
    if not missing:
        return 0
    if not (Path(weights_dir) / f"cgcnn_{prop}.pt").exists():
        raise WeightsError(f"{weights_dir}: no CGCNN model for '{prop}' to fill the {len(missing)} missing values")
    values = PropertyPredictor(weights_dir, properties=(prop,), required=(prop,)).predict(
        [r.structure for r in missing])[prop].to_numpy(float)
    for r, v in zip(missing, values):
        r.properties[prop], r.properties[f"{prop}_predicted"] = float(v), 1
    return len(missing)


def run_cli(a) -> int:
    from icsg.data.sources import iter_source
    from icsg.io import atomic_write_json

    recs = []
    for src in a.sources:
        recs.extend(iter_source(src, limit=a.limit))
    bad = [r for r in recs if r.error is not None]
    for r in bad:
        print(f"icsg predict: skipped {r.error}", file=sys.stderr)
    good = [r for r in recs if r.error is None]
    if not good:
        print("icsg predict: error: no readable crystal in the input", file=sys.stderr)
        return 2
    df = predict_properties([r.structure for r in good], a.weights or WEIGHTS_DIR)
    rows = []
    for r, (_, row) in zip(good, df.iterrows()):
        rows.append({"id": r.id, "formula": r.structure.composition.reduced_formula}
                    | {k: (None if pd.isna(v) else float(v)) for k, v in row.items()})
    for row in rows:
        print(f"{row['id']} ({row['formula']})")
        for k in df.columns:
            unit = PROPERTIES[k].unit
            v = row[k]
            print(f"  {PROPERTIES[k].label:<28} {'NaN (metal)' if v is None else f'{v:.4g}'} {unit}")
    if a.json:
        atomic_write_json(a.json, {"units": {k: PROPERTIES[k].unit for k in df.columns}, "predictions": rows,
                                   "skipped": [{"id": r.id, "reason": r.error.reason, "detail": r.error.detail}
                                               for r in bad]})
    return 0 if not bad else 1
