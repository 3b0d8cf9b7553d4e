"""Filters on generated crystals, in the paper's order (Table 2), each a pure function.

1. interatomic distances > ``min_distance_A`` (periodic, pymatgen neighbour list)
2. stoichiometry of the base (``around`` mode)
3. not in the training set (StructureMatcher against training crystals of the same formula)
4. predicted property within a window of the target (default 20 %)
5. unique among the kept ones (StructureMatcher)
plus charge neutrality from pymatgen's oxidation-state guesses, reported as a flag.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from icsg.metrics import default_matcher


def distances_ok(s: Structure, min_distance_A: float = 0.5) -> bool:
    """Every pair of sites (and every site with its own images) farther apart than the minimum."""
    if min(s.lattice.abc) <= min_distance_A:
        return False
    centres, _, _, _ = s.get_neighbor_list(r=min_distance_A)
    return len(centres) == 0


def same_stoichiometry(s: Structure, base: Structure) -> bool:
    return s.composition.reduced_composition == base.composition.reduced_composition


def charge_neutral(s: Structure) -> bool:
    """True if pymatgen finds an oxidation-state assignment summing to zero."""
    try:
        return len(s.composition.oxi_state_guesses(max_sites=-50)) > 0
    except Exception:
        return False


class TrainingSet:
    """Training crystals indexed by reduced formula, for fast novelty checks.

    Entries may be Structures or CIF strings; CIFs are parsed only when a generated
    crystal of the same formula asks for them, so a 10^4-crystal training set costs
    a formula scan, not 10^4 CIF parses.
    """

    def __init__(self, structures: list[Structure] = (), matcher: StructureMatcher | None = None):
        self.by_formula: dict = defaultdict(list)
        for s in structures:
            self.by_formula[s.composition.reduced_formula].append(s)
        self.matcher = matcher or default_matcher()
        self.size = len(structures)

    @classmethod
    def from_csv(cls, path, matcher: StructureMatcher | None = None) -> "TrainingSet":
        import pandas as pd
        from pymatgen.core import Composition

        df = pd.read_csv(path)
        col = next((c for c in ("formula", "pretty_formula") if c in df.columns), None)
        ts = cls(matcher=matcher)
        if col is None:  # no formula column: parse every CIF
            for cif in df["cif"]:
                s = Structure.from_str(cif, fmt="cif")
                ts.by_formula[s.composition.reduced_formula].append(s)
        else:
            for f, cif in zip(df[col], df["cif"]):
                ts.by_formula[Composition(f).reduced_formula].append(cif)
        ts.size = len(df)
        return ts

    def _structures(self, formula: str) -> list[Structure]:
        items = self.by_formula.get(formula, [])
        if any(isinstance(t, str) for t in items):
            items = [Structure.from_str(t, fmt="cif") if isinstance(t, str) else t for t in items]
            self.by_formula[formula] = items
        return items

    def contains(self, s: Structure) -> bool:
        return any(self.matcher.fit(s, t) for t in self._structures(s.composition.reduced_formula))


def within_window(value: float, target: float, rel: float = 0.2) -> bool:
    """|value - target| <= rel·|target| (absolute rel when the target is ~0)."""
    if not np.isfinite(value):
        return False
    return abs(value - target) <= rel * max(abs(target), 1e-6 if target else 1.0)


def unique_mask(structures: list[Structure | None], keep: list[bool],
                matcher: StructureMatcher | None = None) -> list[bool]:
    """Among ``keep``, True for the first of each group of matching structures."""
    matcher = matcher or default_matcher()
    seen: dict = defaultdict(list)
    out = []
    for s, k in zip(structures, keep):
        if not k or s is None:
            out.append(False)
            continue
        f = s.composition.reduced_formula
        dup = any(matcher.fit(s, t) for t in seen[f])
        if not dup:
            seen[f].append(s)
        out.append(not dup)
    return out
