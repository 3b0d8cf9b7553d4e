"""Which composition a code stands for: the readout heads give each element's count independently; these
functions pick whole compositions from those count probabilities, kept to what the training crystals look
like when the code comes from a prior (numbers of sites, anonymous and ionic formulas)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def runner_up_counts(log_probs: np.ndarray, k: int, best: np.ndarray | None = None,
                     keep_total: bool = False) -> list[np.ndarray]:
    """The ``k`` most probable compositions after ``best`` (default: each element's most probable count) under
    per-element count log-probabilities (E, K): each ``best`` with one element's count changed (the heads treat
    the elements as independent), or with ``keep_total`` one count raised and another lowered by one."""
    best = log_probs.argmax(-1) if best is None else np.asarray(best)
    E, K = log_probs.shape
    own = log_probs[np.arange(E), best]
    drop = own[:, None] - log_probs  # (E, K) cost of each change
    drop[np.arange(E), best] = np.inf
    if keep_total:
        up = np.where(best + 1 < K, drop[np.arange(E), np.minimum(best + 1, K - 1)], np.inf)
        down = np.where(best > 0, drop[np.arange(E), np.maximum(best - 1, 0)], np.inf)
        pair = up[:, None] + down[None, :]
        np.fill_diagonal(pair, np.inf)
        out = []
        for flat in np.argsort(pair, axis=None)[:k]:
            e_up, e_down = np.unravel_index(flat, pair.shape)
            if np.isfinite(pair[e_up, e_down]):
                alt = best.copy()
                alt[e_up] += 1
                alt[e_down] -= 1
                out.append(alt)
        return out
    out = []
    for flat in np.argsort(drop, axis=None)[:k]:
        e, c = np.unravel_index(flat, drop.shape)
        if np.isfinite(drop[e, c]):
            alt = best.copy()
            alt[e] = c
            out.append(alt)
    return out


def composition_with_total(log_probs: np.ndarray, total: int) -> tuple[np.ndarray, float]:
    """(counts (E,), log-probability) of the most probable composition with ``total`` sites under independent
    per-element count log-probabilities (E, K); (None, -inf) when no composition has that many. A knapsack
    over the elements, O(E · total · K)."""
    E, K = log_probs.shape
    score = np.full(total + 1, -np.inf)
    score[0] = 0.0
    choice = np.zeros((E, total + 1), np.int64)
    for e in range(E):
        new = np.full(total + 1, -np.inf)
        for c in range(min(K, total + 1)):
            cand = np.full(total + 1, -np.inf)
            cand[c:] = score[:total + 1 - c] + log_probs[e, c]
            better = cand > new
            new[better], choice[e, better] = cand[better], c
        score = new
    if not np.isfinite(score[total]):
        return None, -np.inf
    counts, left = np.zeros(E, np.int64), total
    for e in range(E - 1, -1, -1):
        counts[e] = choice[e, left]
        left -= counts[e]
    return counts, float(score[total])


def counts_with_site_prior(log_probs: np.ndarray, site_counts: np.ndarray) -> np.ndarray:
    """(B, E) compositions of the heads' count log-probabilities (B, E, K) whose number of sites is one the
    training crystals have: the N maximising log P(best composition with N sites) + log P_train(N), as CDVAE
    draws the number of atoms before the composition. ``site_counts``: training crystals per number of sites."""
    hist = np.asarray(site_counts, dtype=np.float64)
    support = np.flatnonzero(hist > 0)
    log_prior = np.log(hist[support] / hist.sum())
    out = []
    for lp in log_probs:
        best, best_score = lp.argmax(-1), -np.inf
        for n, prior in zip(support, log_prior):
            counts, score = composition_with_total(lp, int(n))
            if counts is not None and score + prior > best_score:
                best, best_score = counts, score + prior
        out.append(best)
    return np.stack(out) if out else np.zeros(log_probs.shape[:2], np.int64)


def composition_with_formula(log_probs: np.ndarray, formula: np.ndarray) -> tuple[np.ndarray, float]:
    """(counts (E,), log-probability) of the most probable composition under independent per-element count
    log-probabilities (E, K) whose anonymous formula (per-element site counts, any order, 0-padded) is
    ``formula``: one linear assignment of its counts to the elements. (None, -inf) when none fits."""
    from scipy.optimize import linear_sum_assignment

    E, K = log_probs.shape
    c = np.asarray(formula, np.int64)
    c = c[c > 0]
    if len(c) > E or (len(c) and c.max() >= K):
        return None, -np.inf
    gain = log_probs[:, c].T - log_probs[:, 0][None, :]  # (L, E): each count on each element, against absent
    rows, cols = linear_sum_assignment(gain, maximize=True)
    counts = np.zeros(E, np.int64)
    counts[cols] = c[rows]
    return counts, float(log_probs[:, 0].sum() + gain[rows, cols].sum())


def anonymous_formula(z) -> tuple:
    """Per-element site counts of a cell's elements ``z`` in descending order (SrTiO3: (3, 1, 1))."""
    return tuple(sorted(np.unique(np.asarray(z, np.int64), return_counts=True)[1].tolist(), reverse=True))


def formula_histogram(site_Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(formulas (P, L), crystals per formula (P,)) of crystals given as padded site elements (N, max_sites):
    each cell's anonymous formula as its per-element site counts in descending order (SrTiO3: 3, 1, 1)."""
    from collections import Counter

    hist = Counter(anonymous_formula(row[row > 0]) for row in np.asarray(site_Z))
    keys = sorted(hist)
    L = max(map(len, keys), default=0)
    formulas = np.array([list(k) + [0] * (L - len(k)) for k in keys], np.int64).reshape(-1, L)
    return formulas, np.array([hist[k] for k in keys], np.int64)


def ionic_formula(composition) -> str | None:
    """The anonymous formula split by ion role, from pymatgen's most probable oxidation states: cation counts |
    anion counts (| neutral counts, when an element is assigned 0), each descending; SrTiO3 '1,1|3', KGeO2F
    '1,1|2,1', Mn2NOF '2|1,1,1'. None when no charge-balanced assignment exists. Finer than the anonymous
    formula: ABX2Y and A2XYZ share (2, 1, 1, 1) but are different kinds of crystal."""
    guesses = composition.oxi_state_guesses(max_sites=-50)
    if not guesses:
        return None
    ox, roles = guesses[0], ([], [], [])
    for el, n in composition.items():
        q = ox[str(el)]
        roles[0 if q > 0 else 1 if q < 0 else 2].append(int(round(n)))
    parts = [",".join(map(str, sorted(r, reverse=True))) for r in roles]
    return "|".join(parts if parts[2] else parts[:2])


def ionic_formula_histogram(site_Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ionic formulas (P,) str, crystals per formula (P,)) of the charge-balanced crystals among padded site
    elements (N, max_sites); crystals with no charge-balanced assignment are left out."""
    from collections import Counter

    from pymatgen.core import Composition, Element

    hist = Counter()
    for row in np.asarray(site_Z):
        z, n = np.unique(row[row > 0], return_counts=True)
        f = ionic_formula(Composition({Element.from_Z(int(a)): int(b) for a, b in zip(z, n)}))
        if f is not None:
            hist[f] += 1
    keys = sorted(hist)
    return np.array(keys, dtype=str), np.array([hist[k] for k in keys], np.int64)


def commonest(counts: dict, mass: float = 0.95) -> set:
    """The commonest keys of {key: count} that together hold ``mass`` of the total."""
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    total = sum(n for _, n in items)
    if not total:
        return set()
    n = int(np.searchsorted(np.cumsum([c / total for _, c in items]), mass - 1e-12)) + 1
    return {k for k, _ in items[:n]}


def counts_with_formula_prior(log_probs: np.ndarray, formulas: np.ndarray, formula_counts: np.ndarray) -> np.ndarray:
    """(B, E) compositions of the heads' count log-probabilities (B, E, K) whose anonymous formula is one the
    training crystals have: the formula F maximising log P(best composition of F) + log P_train(F). Finer than
    the number of sites alone: the heads treat the elements as independent, so a code between an ABX3 and its
    neighbours can read as A2X3 (the A = B formula, 2 % of perov_5) as easily as ABX3."""
    out = [next(iter(ranked_by_formula(lp, formulas, formula_counts)), lp.argmax(-1)) for lp in log_probs]
    return np.stack(out) if out else np.zeros(log_probs.shape[:2], np.int64)


def ranked_by_formula(log_probs: np.ndarray, formulas: np.ndarray, formula_counts: np.ndarray) -> list[np.ndarray]:
    """Compositions (E,) of one crystal's count log-probabilities (E, K), the best one of each anonymous formula the
    training crystals have, most probable first: log P(composition) + log P_train(formula)."""
    keep = np.asarray(formula_counts) > 0
    formulas, log_prior = np.asarray(formulas)[keep], np.log(formula_counts[keep] / formula_counts[keep].sum())
    cands = [(score + prior, counts) for f, prior in zip(formulas, log_prior)
             for counts, score in [composition_with_formula(log_probs, f)] if counts is not None]
    return [counts for _, counts in sorted(cands, key=lambda t: -t[0])]  # stable: ties keep the formulas' order


class CompositionPrior(NamedTuple):
    """How the training crystals' compositions look, for reading codes drawn from a prior (which can fall
    between real crystals' codes): their numbers of sites, and where known their anonymous and ionic formulas."""

    site_counts: np.ndarray                    # (max_sites + 1,) training crystals per number of sites
    formulas: np.ndarray | None = None         # (P, L) anonymous formulas (``formula_histogram``)
    formula_counts: np.ndarray | None = None   # (P,) training crystals per formula
    ionic_formulas: np.ndarray | None = None   # (Q,) str ionic formulas (``ionic_formula_histogram``)
    ionic_counts: np.ndarray | None = None     # (Q,) charge-balanced training crystals per ionic formula

    def counts(self, log_probs: np.ndarray) -> np.ndarray:
        """(B, E) compositions of the heads' count log-probabilities (B, E, K) under this prior."""
        if self.formulas is not None and len(self.formulas):
            return counts_with_formula_prior(log_probs, self.formulas, self.formula_counts)
        return counts_with_site_prior(log_probs, self.site_counts)

    def shares(self) -> dict:
        """{anonymous formula (``anonymous_formula`` tuple): share of the training crystals}; {} without a record."""
        if self.formulas is None or not len(self.formulas):
            return {}
        total = np.sum(self.formula_counts)
        return {tuple(int(c) for c in f if c > 0): n / total for f, n in zip(self.formulas, self.formula_counts)}

    def typical_formulas(self, mass: float = 0.95) -> set | None:
        """The commonest anonymous formulas (``anonymous_formula`` tuples) that together hold ``mass`` of the
        training crystals; None without a formula record."""
        shares = self.shares()
        return commonest(shares, mass) if shares else None

    def typical_ionic_formulas(self, mass: float = 0.95) -> set | None:
        """The commonest ionic formulas (``ionic_formula`` strings) that together hold ``mass`` of the
        charge-balanced training crystals; None without an ionic record."""
        if self.ionic_formulas is None or not len(self.ionic_formulas):
            return None
        return commonest({str(f): int(n) for f, n in zip(self.ionic_formulas, self.ionic_counts)}, mass)


def balanced_or_alloy(composition) -> bool:
    """A composition pymatgen can give charge-balanced integer oxidation states (one per element), or one of metals
    alone (an alloy or intermetallic, which needs none). pymatgen also offers averaged, mixed-valence states
    (CsBr7 as Cs+1 Br-1/7), which balance almost anything and are not counted."""
    if all(el.is_metal for el in composition.elements):
        return True
    return any(all(abs(q - round(q)) < 1e-6 for q in guess.values())
               for guess in composition.oxi_state_guesses(max_sites=-50))


def counts_preferring_balanced(log_probs: np.ndarray, formulas: np.ndarray, formula_counts: np.ndarray,
                               elements_Z, top: int = 10) -> np.ndarray:
    """(B, E) compositions of count log-probabilities (B, E, K) for codes drawn from a prior: of the ``top`` most
    probable compositions whose anonymous formula the training crystals have (``ranked_by_formula``), the first
    that is charge-balanced or an alloy (``balanced_or_alloy``), else the first. Codes between training codes read
    as mixtures of their neighbours' counts (Li3O5 between Li2O and LiO2); 90 % of the held-out Materials Project
    crystals are charge-balanced by SMACT's test, argmax readings of the flow prior's codes 77 %."""
    from pymatgen.core import Composition, Element

    out = []
    for lp in log_probs:
        ranked = ranked_by_formula(lp, formulas, formula_counts)
        pick = ranked[0] if ranked else lp.argmax(-1)
        for counts in ranked[:top]:
            comp = Composition({Element.from_Z(int(z)): int(n) for z, n in zip(elements_Z, counts) if n > 0})
            if balanced_or_alloy(comp):
                pick = counts
                break
        out.append(pick)
    return np.stack(out) if out else np.zeros(log_probs.shape[:2], np.int64)
