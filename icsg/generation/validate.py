"""``icsg validate DIR``: relax generated candidates with CHGNet and report how far they move.

The paper (Table 3) relaxed candidates with DFT and reported the mean change of bond
lengths and cell, and the energy error of the CGCNN. Here the relaxation is CHGNet
(Deng et al. 2023, a universal machine-learning potential that ships its own weights:
``pip install 'icsg[relax]'``). **CHGNet is an ML potential, not DFT**; every output says so.

Per candidate: mean |Δ bond length| % over the neighbour pairs (within ``cutoff_A`` of each
other in the generated cell, followed by index and periodic image into the relaxed one),
mean |Δ cell length| %, the relaxed CHGNet energy (eV/atom), |E_CHGNet − E_CGCNN| against
the CGCNN ``energy_per_atom`` prediction in ``candidates.csv``, and the relaxation energy
E(input) − E(relaxed) (eV/atom, the candidate's energy above its relaxed self).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from icsg.errors import SourceError
from icsg.io import atomic_path, atomic_write_json

NOTE = "relaxations and energies are CHGNet (a machine-learning potential), not DFT"


def bond_change_percent(before: Structure, after: Structure, cutoff_A: float = 3.5) -> float:
    """Mean |d' − d| / d · 100 over pairs within ``cutoff_A`` in ``before``, same sites and images in ``after``."""
    i, j, images, d = before.get_neighbor_list(cutoff_A)
    keep = d > 1e-6
    if not keep.any():
        return float("nan")
    i, j, images, d = i[keep], j[keep], images[keep], d[keep]
    # relaxers wrap sites into the cell: follow each site by its smallest displacement
    step = after.frac_coords - before.frac_coords
    f = before.frac_coords + step - np.round(step)
    vec = (f[j] + images - f[i]) @ after.lattice.matrix
    d_new = np.linalg.norm(vec, axis=1)
    return float(np.mean(np.abs(d_new - d) / d) * 100)


def cell_change_percent(before: Structure, after: Structure) -> float:
    """Mean |Δa|/a · 100 over the three cell lengths."""
    a0, a1 = np.array(before.lattice.abc), np.array(after.lattice.abc)
    return float(np.mean(np.abs(a1 - a0) / a0) * 100)


def structure_type(s: Structure) -> str:
    """Anonymised formula and space group, e.g. 'ABC3 Pm-3m' (perovskite)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sg = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_symbol()
    except Exception:
        sg = "?"
    return f"{s.composition.anonymized_formula} {sg}"


def load_relaxer():
    try:
        from chgnet.model import CHGNet, StructOptimizer
    except ImportError:
        raise SourceError("icsg validate needs CHGNet: pip install 'icsg[relax]' (or pip install chgnet)") from None
    return StructOptimizer(model=CHGNet.load(verbose=False), optimizer_class="FIRE")


def relax(relaxer, s: Structure, fmax: float = 0.1, steps: int = 300) -> dict:
    """CHGNet relaxation of positions and cell; energies per atom (eV/atom)."""
    res = relaxer.relax(s, fmax=fmax, steps=steps, relax_cell=True, verbose=False)
    traj = res["trajectory"]
    n = len(s)
    final = res["final_structure"]
    return {"structure": final, "e_input_eV_atom": float(traj.energies[0]) / n,
            "e_relaxed_eV_atom": float(traj.energies[-1]) / n, "steps": len(traj.energies)}


def _candidates(folder: Path) -> pd.DataFrame:
    csv = folder / "candidates.csv"
    if csv.exists():
        df = pd.read_csv(csv)
        if "file" not in df.columns:
            raise SourceError(f"{csv}: no 'file' column (the CIF of each kept candidate, as 'icsg generate' writes)")
        df = df[df["file"].fillna("").astype(str) != ""].copy()
    else:
        df = pd.DataFrame({"file": sorted(p.name for p in folder.glob("*.cif"))})
    if df.empty:
        raise SourceError(f"{folder}: no candidate CIFs to validate (run 'icsg generate' first)")
    return df


def validate_dir(folder, fmax: float = 0.1, steps: int = 300, limit: int | None = None,
                 progress: bool = True) -> tuple[pd.DataFrame, dict]:
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder")
    df = _candidates(folder)
    if limit is not None:
        df = df.head(limit)
    relaxer = load_relaxer()
    rows = []
    t0 = time.perf_counter()
    for _, row in tqdm(df.iterrows(), total=len(df), desc="CHGNet relax", disable=not progress):
        out = {"file": row["file"]}
        try:
            s = Structure.from_file(folder / row["file"])
        except Exception as exc:
            rows.append({**out, "failure": f"unreadable CIF: {str(exc)[:120]}"})
            continue
        try:
            r = relax(relaxer, s, fmax, steps)
        except Exception as exc:  # a pathological candidate must not stop the batch
            rows.append({**out, "failure": f"relaxation failed: {type(exc).__name__}: {str(exc)[:120]}"})
            continue
        e_pred = float(row["energy_per_atom"]) if "energy_per_atom" in row and pd.notna(row.get("energy_per_atom")) \
            else np.nan
        rows.append({**out, "formula": s.composition.reduced_formula, "structure_type": structure_type(s),
                     "bond_change_pct": bond_change_percent(s, r["structure"]),
                     "cell_change_pct": cell_change_percent(s, r["structure"]),
                     "e_chgnet_eV_atom": r["e_relaxed_eV_atom"], "e_cgcnn_eV_atom": e_pred,
                     "abs_e_error_eV_atom": abs(r["e_relaxed_eV_atom"] - e_pred) if np.isfinite(e_pred) else np.nan,
                     "relaxation_energy_eV_atom": r["e_input_eV_atom"] - r["e_relaxed_eV_atom"],
                     "relax_steps": r["steps"], "failure": None})
    res = pd.DataFrame(rows)
    cols = ["bond_change_pct", "cell_change_pct", "abs_e_error_eV_atom", "relaxation_energy_eV_atom"]
    ok = res[res["failure"].isna()] if "failure" in res else res
    summary = {"note": NOTE, "n_candidates": int(len(df)), "n_relaxed": int(len(ok)),
               "fmax_eV_A": fmax, "max_steps": steps, "seconds": time.perf_counter() - t0,
               "mean": {c: float(ok[c].mean()) for c in cols if c in ok and len(ok)},
               "median": {c: float(ok[c].median()) for c in cols if c in ok and len(ok)},
               "by_structure_type": ({t: {"n": int(len(g)), **{c: float(g[c].mean()) for c in cols}}
                                      for t, g in ok.groupby("structure_type")} if len(ok) else {})}
    return res, summary


def register_cli(sub) -> None:
    p = sub.add_parser("validate", help="relax generated candidates with CHGNet (ML potential, not DFT)",
                       description="Relax the kept candidates of an 'icsg generate' folder with CHGNet and report "
                                   "mean |Δ bond| %, |Δ cell| %, |E_CHGNet − E_CGCNN| and the relaxation energy, "
                                   "per candidate (validation.csv) and by structure type (validation.json). "
                                   + NOTE + ". Needs pip install 'icsg[relax]'.")
    p.add_argument("folder", help="output folder of icsg generate (candidates.csv + CIFs) or any CIF folder")
    p.add_argument("--fmax", type=float, default=0.1, help="force convergence (eV/Å)")
    p.add_argument("--steps", type=int, default=300, help="maximum relaxation steps per candidate")
    p.add_argument("--limit", type=int, default=None, help="relax only the first N candidates")
    p.set_defaults(func=_cmd)


def _cmd(a) -> int:
    res, summary = validate_dir(a.folder, a.fmax, a.steps, a.limit)
    folder = Path(a.folder)
    with atomic_path(folder / "validation.csv", suffix=".csv") as tmp:
        res.to_csv(tmp, index=False)
    atomic_write_json(folder / "validation.json", summary)
    print(json.dumps(summary, indent=2))
    print(f"NOTE: {NOTE}")
    return 0
