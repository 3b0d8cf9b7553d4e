"""Reconstruction metrics between a reference and a decoded crystal.

Site EMD is computed in the encoder's frame (no translation is minimised over: the
representation keeps the origin, so a shifted reconstruction is an error), with
minimum-image distances under the reference lattice and an optimal one-to-one
matching (scipy.optimize.linear_sum_assignment). Sites left unmatched because the
counts differ are not folded into the EMD; they are reported as |Δ n_sites|.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from scipy.optimize import linear_sum_assignment


@lru_cache(maxsize=1)
def default_matcher() -> StructureMatcher:
    """The matcher used for match rates (CDVAE's tolerances)."""
    return StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10)


@dataclass
class PairMetrics:
    cell_mae_A: float
    site_emd_A: float
    dn_sites: int
    species_accuracy: float
    match: bool
    angle_mae_deg: float = float("nan")
    cell_max_A: float = float("nan")     # largest |Δ| of the three lengths
    angle_max_deg: float = float("nan")  # largest |Δ| of the three angles

    def to_dict(self) -> dict:
        return asdict(self)


def cell_mae_A(ref: Structure, pred: Structure) -> float:
    """Mean |a' - a| over the three cell lengths (Å)."""
    return float(np.mean(np.abs(np.array(ref.lattice.abc) - np.array(pred.lattice.abc))))


def site_emd(ref: Structure, pred: Structure) -> tuple[float, float]:
    """(mean matched minimum-image distance in Å, fraction of matched pairs with equal species).

    Predicted fractional coordinates are placed in the reference lattice, so a cell
    error does not count twice.
    """
    if len(ref) == 0 or len(pred) == 0:
        return float("nan"), float("nan")
    d = ref.lattice.get_all_distances(ref.frac_coords, pred.frac_coords)
    rows, cols = linear_sum_assignment(d)
    same = [ref[i].specie == pred[j].specie for i, j in zip(rows, cols)]
    return float(d[rows, cols].mean()), float(np.mean(same))


def compare(ref: Structure, pred: Structure, matcher: StructureMatcher | None = None) -> PairMetrics:
    emd, acc = site_emd(ref, pred)
    m = matcher or default_matcher()
    try:
        match = bool(m.fit(ref, pred))
    except Exception:  # pymatgen can fail on degenerate reconstructions; that is a non-match
        match = False
    dl = np.abs(np.array(ref.lattice.abc) - np.array(pred.lattice.abc))
    da = np.abs(np.array(ref.lattice.angles) - np.array(pred.lattice.angles))
    return PairMetrics(float(dl.mean()), emd, abs(len(ref) - len(pred)), acc, match, float(da.mean()),
                       float(dl.max()), float(da.max()))


_REJECTIONS = {"malformed_cif", "empty", "unreadable", "disordered", "non_cubic", "too_many_atoms", "no_radius",
               "unknown_element", "symmetry_failed", "cell_too_large"}


def smape_percent(pred: np.ndarray, true: np.ndarray) -> float:
    """Symmetric mean absolute percentage error, 0-200 %."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.mean(2 * np.abs(pred - true) / (np.abs(pred) + np.abs(true) + 1e-12)) * 100)


def summarise(pairs: list[PairMetrics], failures: list[dict], n_total: int) -> dict:
    """Aggregate per-crystal metrics.

    ``n_accepted`` counts crystals the filters let through; the match rate is over
    those, with decoding failures counted as non-matches. Filter rejections are
    listed in ``failures`` and counted in ``rejected`` but are not in the rate.
    """
    def mean(key):
        vals = [getattr(p, key) for p in pairs if np.isfinite(getattr(p, key))]
        return float(np.mean(vals)) if vals else float("nan")

    rejected: dict = {}
    for f in failures:
        if f["reason"] in _REJECTIONS:
            rejected[f["reason"]] = rejected.get(f["reason"], 0) + 1
    n_accepted = n_total - sum(rejected.values())
    return {
        "n": int(n_total),
        "n_accepted": int(n_accepted),
        "n_decoded": len(pairs),
        "cell_mae_A": mean("cell_mae_A"),
        "cell_max_error_A": float(max((p.cell_max_A for p in pairs), default=float("nan"))),
        "angle_mae_deg": mean("angle_mae_deg"),
        "angle_max_error_deg": float(max((p.angle_max_deg for p in pairs), default=float("nan"))),
        "site_emd_A": mean("site_emd_A"),
        "dn_sites": mean("dn_sites"),
        "species_accuracy": mean("species_accuracy"),
        "match_rate": float(sum(p.match for p in pairs) / n_accepted) if n_accepted else float("nan"),
        "rejected": rejected,
        "failures": failures,
    }
