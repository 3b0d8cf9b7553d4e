"""Which crystals the cubic voxel representation can take, each rejection with its reason.

The representation needs an ordered, cubic (by default) cell of at most
``max_atoms`` sites whose elements all have an ionic radius. Primitive cells of
cubic crystals (a fcc Heusler is a 60° rhombohedron) are first turned into the
conventional standard cell with spglib via pymatgen's SpacegroupAnalyzer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from icsg.errors import CrystalError
from icsg.representation.radii import ionic_radius_A


@dataclass(frozen=True)
class FilterConfig:
    """Args:
        max_atoms: most sites in the (conventional) cell (paper: 40).
        require_cubic: a = b = c; if False any orthogonal cell passes.
        length_rtol: relative tolerance for a = b = c.
        angle_tol_deg: tolerance for 90° angles.
        symprec: spglib tolerance (Å) for finding the conventional cell.
    """

    max_atoms: int = 40
    require_cubic: bool = True
    length_rtol: float = 1e-3
    angle_tol_deg: float = 0.5
    symprec: float = 0.1


def _shape_ok(s: Structure, cfg: FilterConfig) -> bool:
    a = np.array(s.lattice.abc)
    ang = np.array(s.lattice.angles)
    if np.any(np.abs(ang - 90) > cfg.angle_tol_deg):
        return False
    return (not cfg.require_cubic) or bool(np.ptp(a) <= cfg.length_rtol * a.mean())


def standardise(s: Structure, item: str, cfg: FilterConfig = FilterConfig()) -> Structure:
    """The cell the representation uses, or CrystalError naming the reason."""
    if not s.is_ordered:
        raise CrystalError(item, "disordered", "partial occupancies")
    for el in s.composition.elements:
        ionic_radius_A(el.symbol, item=item)
    if not _shape_ok(s, cfg):
        try:
            conv = SpacegroupAnalyzer(s, symprec=cfg.symprec).get_conventional_standard_structure()
        except Exception as exc:
            raise CrystalError(item, "symmetry_failed", str(exc)) from None
        if not _shape_ok(conv, cfg):
            kind = "cubic" if cfg.require_cubic else "orthogonal"
            raise CrystalError(item, "non_cubic",
                               f"conventional cell {np.round(conv.lattice.abc, 3).tolist()} Å, "
                               f"{np.round(conv.lattice.angles, 1).tolist()}° is not {kind}")
        s = conv
    if len(s) > cfg.max_atoms:
        raise CrystalError(item, "too_many_atoms", f"{len(s)} sites > {cfg.max_atoms}")
    return s


class RejectionLog:
    """Counts rejections by reason and keeps the items for the report."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.items: list[dict] = []

    def add(self, err: CrystalError) -> None:
        self.counts[err.reason] += 1
        self.items.append({"id": err.item, "reason": err.reason, "detail": err.detail})

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "items": self.items}
