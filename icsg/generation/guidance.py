"""Which of the decoded draws guided sampling keeps: pure functions over the draws' ranks and formulas."""

from __future__ import annotations

import numpy as np


def keep_formula_mix(order: np.ndarray, formulas: list, eligible: np.ndarray, shares: dict, n: int) -> np.ndarray:
    """``order`` (a ranking of the draws, best first) rearranged so that its first ``n`` hold the anonymous
    formulas in the training crystals' proportions where the draws allow: first, walking ``order``, each
    ``eligible`` draw whose formula's quota (floor of n × its training share, ``shares``) is not yet full;
    then the rest in their order. Ranking by a criterion that one formula meets more often than another (the
    property bin, typicality) would otherwise shift the mix of formulas, and with it the number of elements.
    ``formulas``: each draw's formula (a hashable; None = none)."""
    order = np.asarray(order)
    quota = {f: int(np.floor(n * s)) for f, s in shares.items()}
    first = []
    for i in order:
        f = formulas[i]
        if len(first) < n and eligible[i] and quota.get(f, 0) > 0:
            first.append(i)
            quota[f] -= 1
    taken = set(first)
    return np.array(first + [i for i in order if i not in taken], dtype=np.int64)
