"""Put a known composition on segmented sites: one linear assignment per crystal.

The readout heads (``icsg.models.readout``) say which elements a crystal holds and how many of each;
the segmented map says where the sites are. What is left is which site gets which element, and
which regions are spurious or missing. Each element slot (an element repeated by its count) is
assigned to one site by ``scipy.optimize.linear_sum_assignment`` on the cost

    cost[site, slot] = −log p(element of slot | site)  (+ ``spare_cost`` for a spare position)

where p are the segmenter's class probabilities around the site (``species_fit.site_class_log_probs``)
and the eq.-1 profile term (how far the site's peak height is from that element's). Sites left
without a slot are dropped; spare positions (local maxima the sites leave unexplained) are used only
when there are fewer sites than slots.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

_FLOOR = np.log(1e-4)


def element_slots(counts: np.ndarray, elements_Z) -> np.ndarray:
    """(E,) counts of ``elements_Z`` -> (n,) Z, each element repeated by its count (heaviest first)."""
    counts = np.asarray(counts, dtype=np.int64)
    z = np.repeat(np.asarray(elements_Z, dtype=np.int64), np.clip(counts, 0, None))
    return np.sort(z)[::-1]


def class_columns(log_probs: np.ndarray, classes_Z, slots_Z: np.ndarray) -> np.ndarray:
    """(K, C) class log-probabilities -> (K, n) for the slots' elements; absent classes get a floor."""
    col = {int(z): i for i, z in enumerate(classes_Z)}
    lp = np.asarray(log_probs, dtype=np.float64).reshape(-1, len(col))
    return np.stack([lp[:, col[int(z)]] if int(z) in col else np.full(len(lp), _FLOOR) for z in slots_Z], axis=1)


def periodic_distances_A(a_frac: np.ndarray, b_frac: np.ndarray, abc_A: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) minimum-image distances (Å) between fractional positions in an orthogonal cell of
    lengths ``abc_A``."""
    d = np.asarray(a_frac, dtype=np.float64).reshape(-1, 3)[:, None, :] - \
        np.asarray(b_frac, dtype=np.float64).reshape(-1, 3)[None, :, :]
    d -= np.round(d)
    return np.sqrt(((d * np.asarray(abc_A, dtype=np.float64)) ** 2).sum(-1))


def periodic_clusters(frac: np.ndarray, abc_A: np.ndarray, tol_A: float) -> np.ndarray:
    """(K,) cluster label per site: sites closer than ``tol_A`` under periodic boundaries (an orthogonal cell
    of lengths ``abc_A``) are one atom seen twice (box boundary, a blurred peak split in two)."""
    frac = np.asarray(frac, dtype=np.float64).reshape(-1, 3)
    if len(frac) < 2:
        return np.ones(len(frac), dtype=np.int64)
    dist = periodic_distances_A(frac, frac, abc_A)
    np.fill_diagonal(dist, 0.0)
    return fcluster(linkage(squareform(dist, checks=False), "single"), tol_A, "distance").astype(np.int64)


def assign_elements(site_cost: np.ndarray, spare_cost: np.ndarray | None = None,
                    spare_penalty: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Slots onto sites at the least total cost.

    Args:
        site_cost: (K, n) cost of slot j at site i.
        spare_cost: (P, n) the same for spare positions, used only where K < n.
        spare_penalty: added to every spare's cost, so a spare never displaces a segmented site.

    Returns:
        (rows, slots): the chosen candidate per slot (index into sites, then spares) and the slot order,
        both (min(n, K + P),).
    """
    cost = np.asarray(site_cost, dtype=np.float64)
    if spare_cost is not None and len(spare_cost) and cost.shape[0] < cost.shape[1]:
        cost = np.concatenate([cost, np.asarray(spare_cost, dtype=np.float64) + spare_penalty], axis=0)
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, slots = linear_sum_assignment(cost)
    return rows.astype(np.int64), slots.astype(np.int64)


def distinct_arrangements(slots_Z: np.ndarray, limit: int = 5000) -> np.ndarray | None:
    """(A, n) every distinct order of the multiset ``slots_Z`` (None if there are more than ``limit``)."""
    from math import factorial

    values, counts = np.unique(np.asarray(slots_Z, dtype=np.int64), return_counts=True)
    total = factorial(int(counts.sum()))
    for c in counts:
        total //= factorial(int(c))
    if total > limit:
        return None
    out: list[list[int]] = []

    def grow(prefix: list[int], left: np.ndarray) -> None:
        if left.sum() == 0:
            out.append(prefix)
            return
        for i in np.flatnonzero(left):
            left[i] -= 1
            grow(prefix + [int(values[i])], left)
            left[i] += 1

    grow([], counts.copy())
    return np.array(out, dtype=np.int64).reshape(-1, len(slots_Z))


def profile_arrangement(density: np.ndarray, centroids_vox: np.ndarray, abc_A: np.ndarray, z_start: np.ndarray,
                        log_probs: np.ndarray, classes_Z, spec, prior_weight: float = 1.0, stride: int = 2
                        ) -> np.ndarray:
    """The order of the elements ``z_start`` over the sites (counts kept) that best explains the map.

    Minimises the eq.-1 misfit ||M − Σ_k g(e_k, x_k)||² − prior_weight · Σ_k log p_k(e_k) (``species_fit``:
    the same energy as the density-profile reading, here over the orders of a known composition). Every
    distinct order is scored when there are at most a few thousand; otherwise pairs of sites swap elements
    while that lowers the energy, from ``z_start`` (the linear assignment).
    """
    from icsg.segmentation.species_fit import candidate_table, site_images

    z_start = np.asarray(z_start, dtype=np.int64)
    els = np.unique(z_start)
    if len(els) < 2 or len(z_start) < 2:
        return z_start
    cz, cr = candidate_table(els)
    if len(cz) != len(els):  # an element without a radius: no profile to fit
        return z_start
    k = len(z_start)
    g = site_images(centroids_vox, abc_A, cz, cr, spec, stride).reshape(k * len(cz), -1)
    m = np.asarray(density, dtype=np.float32)[::stride, ::stride, ::stride].reshape(-1)
    b = (g @ m).reshape(k, len(cz)).astype(np.float64)
    b += 0.5 * prior_weight * class_columns(log_probs, classes_Z, cz)
    gram = (g @ g.T).reshape(k, len(cz), k, len(cz)).astype(np.float64)
    col = {int(z): i for i, z in enumerate(cz)}
    sites = np.arange(k)

    def energy(choice: np.ndarray) -> float:
        return float(-2 * b[sites, choice].sum() + gram[sites[:, None], choice[:, None], sites[None, :],
                                                          choice[None, :]].sum())

    orders = distinct_arrangements(z_start)
    if orders is not None:
        choices = np.vectorize(col.get)(orders)
        lin = -2 * b[sites[None, :], choices].sum(1)
        quad = gram[sites[None, :, None], choices[:, :, None], sites[None, None, :], choices[:, None, :]].sum((1, 2))
        return orders[int(np.argmin(lin + quad))]
    choice = np.array([col[int(z)] for z in z_start])
    best = energy(choice)
    improved = True
    while improved:
        improved = False
        for i in range(k):
            for j in range(i + 1, k):
                if choice[i] == choice[j]:
                    continue
                choice[[i, j]] = choice[[j, i]]
                e = energy(choice)
                if e < best - 1e-12:
                    best, improved = e, True
                else:
                    choice[[i, j]] = choice[[j, i]]
    return cz[choice].astype(np.int64)


def place_slots(map_frac: np.ndarray, slot_frac: np.ndarray, abc_A: np.ndarray, tol_A: float) -> np.ndarray:
    """(n, 3) where each slot's atom goes: the map site matched to it (one map site per slot, least total
    periodic distance) when that site lies within ``tol_A`` of the slot, else the slot's own position.

    The slots (each an element at a position the code gives) decide which atoms there are; the map
    confirms or corrects where they sit. ``tol_A`` = 0 ignores the map."""
    slot_frac = np.mod(np.asarray(slot_frac, dtype=np.float64).reshape(-1, 3), 1.0)
    map_frac = np.asarray(map_frac, dtype=np.float64).reshape(-1, 3)
    out = slot_frac.copy()
    if tol_A <= 0 or len(map_frac) == 0 or len(slot_frac) == 0:
        return out
    dist = periodic_distances_A(map_frac, slot_frac, abc_A)
    rows, cols = linear_sum_assignment(dist)
    near = dist[rows, cols] <= tol_A
    out[cols[near]] = np.mod(map_frac[rows[near]], 1.0)
    return out
