"""Read a decoded map as the crystal the encoder maps back to the map's own latent vector.

Why: a decoded map's peaks are a few per cent off in height and width, and that is the whole
difference between many elements' eq.-1 Gaussians (La and Y, N and F). The encoder, though, is exact on
crystals: a candidate crystal S (sites, elements, cell) can be drawn with eq. 1 and encoded, and
its posterior mean E(S, y) compared with the latent vector z the map was decoded from. The crystal
read from the map by segmentation is the starting point; this module searches its neighbourhood
(other elements per site among the segmenter's most probable ones, a site removed, a site added where
the map has density the segmented sites leave unexplained, optionally a rescaled cell) for the crystal whose
code is closest to z, by coordinate descent: every move is scored on the encoder in one batch, the
best improving move per crystal is kept, and the distance never increases.

This is the exact reading (``--reading exact``, ``icsg.generation.codec``): tens of seconds per crystal,
opt-in beside the fast reading. In reconstruction the score is exact (z is the input crystal's own code), and
its misses are misses of the search: the input crystal lies closer to z than the answer. The search moves
elements and whole sites, while segmented positions are 0.1-0.5 Å off, so after it the positions alone are
fitted through the encoder and the search runs again from there (``ConsistencyConfig.position_steps``,
``icsg.generation.soft_fit.position_fit``, ``icsg.generation.pipeline.position_rounds``). Measured:
``python benchmarks/reconstruction.py --limit 30 --reading exact`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icsg.generation.search_config import ConsistencyConfig
from icsg.grid import GridSpec
from icsg.representation.density import sites_density, vae_input


@dataclass
class Sites:
    """A segmented crystal before it becomes a Structure: cell (Å), Z per site, sites in voxel indices.

    ``log_probs`` (K, C): the segmenter's class log-probabilities per site (classes ``classes_Z`` of the
    refinement); they rank the elements tried. ``spare_vox`` (P, 3), ``spare_log_probs`` (P, C): positions
    where a site may be missing (``spare_positions``) and their class log-probabilities;
    a site removed by the search becomes a spare. ``residual``: mean squared distance between the crystal's
    code and the latent vector it was decoded from (NaN until refined).
    """

    abc_A: np.ndarray
    z: np.ndarray
    centroids_vox: np.ndarray
    log_probs: np.ndarray | None = None
    spare_vox: np.ndarray | None = None
    spare_log_probs: np.ndarray | None = None
    residual: float = float("nan")
    moves: int = 0


def spare_positions(density: np.ndarray, z: np.ndarray, centroids_vox: np.ndarray, abc_A: np.ndarray,
                    spec: GridSpec, max_spares: int = 4, min_separation_vox: float = 2.0,
                    threshold: float = 0.01) -> np.ndarray:
    """(P, 3) voxel positions where a site may be missing: the strongest local maxima of what the segmented
    sites leave unexplained (the map minus their eq.-1 rendering), inside the cell (fractional coordinate
    in [-0.1, 1)) and farther than ``min_separation_vox`` from every site. A light anion next to a heavy
    cation is a shoulder of the map, not a maximum, but a maximum of that remainder."""
    from skimage.feature import peak_local_max

    cents = np.asarray(centroids_vox, dtype=np.float64).reshape(-1, 3)
    rest = np.asarray(density, dtype=np.float64)
    if len(cents):
        rest = rest - sites_density(z, cents, abc_A, spec)
    peaks = peak_local_max(rest, min_distance=2, threshold_abs=threshold, exclude_border=False)
    if len(peaks) == 0:
        return np.zeros((0, 3))
    n, p = spec.size, spec.padding
    frac = (peaks + 0.5) * (1 + 2 * p) / n - p
    keep = np.all((frac >= -0.1) & (frac < 1.0), axis=1)
    if len(cents):
        keep &= np.sqrt(((peaks[:, None, :] - cents[None]) ** 2).sum(-1)).min(1) > min_separation_vox
    peaks = peaks[keep]
    order = np.argsort(-rest[tuple(peaks.T)], kind="stable")
    return peaks[order[:max_spares]].astype(np.float64)


def z_neighbours(z: int, elements: np.ndarray, width: int) -> list[int]:
    """The ``width`` elements on either side of ``z`` in the sorted list ``elements`` (z itself excluded).
    Eq. 1 peaks of neighbours in Z differ by a few per cent in height and width, which is what decoding
    blurs; the segmenter's class probabilities often rank such a neighbour far down (Re read as W with Re
    48th of 56)."""
    if width <= 0:
        return []
    k = int(np.searchsorted(elements, z))
    return [int(e) for e in elements[max(0, k - width):k + width + 1] if e != z]


def site_elements(s: Sites, k: int, classes_Z: np.ndarray, top: int, width: int) -> list[int]:
    """Elements to try at site ``k``: its ``top`` likeliest classes (``Sites.log_probs``; none without them),
    then the ``width`` neighbours in Z on either side (``z_neighbours``), each once, the site's own included."""
    classes_Z = np.asarray(classes_Z, dtype=np.int64)
    best = []
    if s.log_probs is not None and top:
        order = np.argsort(-np.asarray(s.log_probs[k]), kind="stable")
        best = [int(classes_Z[c]) for c in order if classes_Z[c] > 0][:top]
    return list(dict.fromkeys(best + z_neighbours(int(s.z[k]), np.sort(classes_Z[classes_Z > 0]), width)))


def _parabola_min(x: np.ndarray, y: np.ndarray) -> float | None:
    """Vertex of the parabola through the lowest grid point and its neighbours (None at an edge or if concave)."""
    k = int(np.argmin(y))
    if k == 0 or k == len(x) - 1:
        return None
    (x0, x1, x2), (y0, y1, y2) = x[k - 1:k + 2], y[k - 1:k + 2]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / den
    if a <= 0:
        return None
    return float(np.clip(-b / (2 * a), x0, x2))


class _Scorer:
    """Distance between a candidate crystal's posterior mean and its target latent vector."""

    def __init__(self, vae, latents: np.ndarray, cond: np.ndarray, spec: GridSpec, batch_size: int):
        self.vae, self.latents, self.cond, self.spec, self.batch_size = vae, latents, cond, spec, batch_size
        self.maps = 0

    def __call__(self, owner: list[int], candidates: list[tuple]) -> np.ndarray:
        """owner[m]: crystal of candidate m = (z, centroids_vox, abc_A) -> (M,) mean squared latent distance."""
        out = np.empty(len(candidates))
        step = 4 * self.batch_size  # bounds the memory of the rendered maps (4 channels × n³ float32 each)
        for i in range(0, len(candidates), step):
            chunk = candidates[i:i + step]
            dens = np.stack([sites_density(z, c, abc, self.spec) for z, c, abc in chunk])
            x = vae_input(dens, np.stack([abc for _, _, abc in chunk]), self.spec)
            own = np.asarray(owner[i:i + step])
            mu, _ = self.vae.encoder.predict([x, self.cond[own].astype(np.float32)], verbose=0,
                                             batch_size=self.batch_size)
            out[i:i + len(chunk)] = np.mean((np.asarray(mu) - self.latents[own]) ** 2, axis=1)
        self.maps += len(candidates)
        return out


def code_distances(vae, sites: list[Sites], latents: np.ndarray, cond: np.ndarray, spec: GridSpec,
                   batch_size: int = 64) -> np.ndarray:
    """(M,) mean squared distance between each crystal's posterior mean and its latent vector (rows of
    ``latents`` and ``cond`` one per crystal): the score of the whole refinement, without gradients."""
    score = _Scorer(vae, np.asarray(latents), np.asarray(cond), spec, batch_size)
    return score(list(range(len(sites))), [(s.z, s.centroids_vox, np.asarray(s.abc_A, np.float64)) for s in sites])


def _cell_moves(sites: list[Sites], active: list[int], score: _Scorer, factors: np.ndarray, per_axis: bool) -> None:
    axes = list(range(3)) if per_axis else [None]
    owner, cands, tags = [], [], []
    for q in active:
        s = sites[q]
        for ax in axes:
            for f in factors:
                abc = s.abc_A * f if ax is None else s.abc_A * np.where(np.arange(3) == ax, f, 1.0)
                owner.append(q), cands.append((s.z, s.centroids_vox, abc)), tags.append((q, ax, f))
    if not cands:
        return
    d = score(owner, cands)
    # the parabola's vertex per crystal and axis, scored too; then the best of all points scored
    owner2, cands2, tags2 = [], [], []
    best_axis = {}
    for q in active:
        for ax in axes:
            sel = [m for m, t in enumerate(tags) if t[0] == q and t[1] == ax]
            f = np.array([tags[m][2] for m in sel])
            m_best = sel[int(np.argmin(d[sel]))]
            best_axis[(q, ax)] = (d[m_best], tags[m_best][2])
            v = _parabola_min(f, d[sel])
            if v is not None:
                s = sites[q]
                abc = s.abc_A * v if ax is None else s.abc_A * np.where(np.arange(3) == ax, v, 1.0)
                owner2.append(q), cands2.append((s.z, s.centroids_vox, abc)), tags2.append((q, ax, v))
    if per_axis:  # the three per-axis optima together, as one more candidate
        for q in active:
            scale = np.array([best_axis[(q, ax)][1] for ax in axes])
            s = sites[q]
            owner2.append(q), cands2.append((s.z, s.centroids_vox, s.abc_A * scale)), tags2.append((q, "all", scale))
    d2 = score(owner2, cands2) if cands2 else np.empty(0)
    for q in active:
        s = sites[q]
        best_d, best_abc = s.residual, None
        for m, t in enumerate(tags):
            if t[0] == q and d[m] < best_d:
                best_d, best_abc = d[m], cands[m][2]
        for m, t in enumerate(tags2):
            if t[0] == q and d2[m] < best_d:
                best_d, best_abc = d2[m], cands2[m][2]
        if best_abc is not None:
            s.abc_A, s.residual, s.moves = np.asarray(best_abc, dtype=np.float64), float(best_d), s.moves + 1


def _site_moves(sites: list[Sites], active: list[int], score: _Scorer, candidates_of, spare_elements,
                add_remove: bool = True, group_moves: bool = True, add_margin: float = 0.0) -> list[int]:
    """One pass over the active crystals: every single-site element change, every site removed, every spare
    position (a maximum of the density the sites leave unexplained) filled with one of its likeliest elements;
    the best improving move per crystal is kept."""
    owner, cands, states = [], [], []

    adds = []

    def add(q, z, cents, lp, spare, spare_lp):
        owner.append(q), cands.append((z, cents, sites[q].abc_A)), states.append((z, cents, lp, spare, spare_lp))
        adds.append(len(z) > len(sites[q].z))

    for q in active:
        s = sites[q]
        tried = {tuple(s.z)}

        def change(z2):
            if tuple(z2) not in tried:
                tried.add(tuple(z2))
                add(q, z2, s.centroids_vox, s.log_probs, s.spare_vox, s.spare_log_probs)

        for k in range(len(s.z)):
            for cz in candidates_of(s, k):
                z2 = s.z.copy()
                z2[k] = cz
                change(z2)
        if group_moves:
            # every site of one element changed together (three O read as F), and two sites' elements swapped
            for el in np.unique(s.z):
                on = np.flatnonzero(s.z == el)
                if len(on) > 1:
                    for cz in dict.fromkeys(c for k in on for c in candidates_of(s, k)):
                        change(np.where(s.z == el, cz, s.z))
            for k in range(len(s.z)):
                for m in range(k + 1, len(s.z)):
                    if s.z[k] != s.z[m]:
                        z2 = s.z.copy()
                        z2[k], z2[m] = s.z[m], s.z[k]
                        change(z2)
        if not add_remove:
            continue
        if len(s.z) > 1:
            for k in range(len(s.z)):
                keep = np.arange(len(s.z)) != k
                lp = None if s.log_probs is None else s.log_probs[keep]
                sp, sp_lp = _with_spare(s, s.centroids_vox[k], None if s.log_probs is None else s.log_probs[k])
                add(q, s.z[keep], s.centroids_vox[keep], lp, sp, sp_lp)
        for j in range(0 if s.spare_vox is None or s.spare_log_probs is None else len(s.spare_vox)):
            rest = np.arange(len(s.spare_vox)) != j
            for cz in spare_elements(s, j):
                lp = None if s.log_probs is None else np.vstack([s.log_probs, s.spare_log_probs[j:j + 1]])
                add(q, np.append(s.z, cz), np.vstack([s.centroids_vox, s.spare_vox[j:j + 1]]), lp,
                    s.spare_vox[rest], s.spare_log_probs[rest])
    if not cands:
        return []
    d = score(owner, cands)
    improved = []
    for q in active:
        sel = [m for m, o in enumerate(owner) if o == q]
        if not sel:
            continue
        # a site added must earn its place: it has to cut the distance by add_margin (relative)
        eff = d[sel] / np.where(np.asarray(adds)[sel], 1.0 - add_margin, 1.0)
        m = sel[int(np.argmin(eff))]
        if eff.min() < sites[q].residual:
            s = sites[q]
            s.z, s.centroids_vox, s.log_probs, s.spare_vox, s.spare_log_probs = states[m]
            s.residual, s.moves = float(d[m]), s.moves + 1
            improved.append(q)
    return improved


def _with_spare(s: Sites, vox: np.ndarray, lp: np.ndarray | None) -> tuple:
    """The crystal's spare positions with a removed site's position added (so a later pass can put it back)."""
    if s.spare_vox is None or s.spare_log_probs is None or lp is None:
        return s.spare_vox, s.spare_log_probs
    return np.vstack([s.spare_vox, vox[None]]), np.vstack([s.spare_log_probs, lp[None]])


def refine_sites(vae, sites: list[Sites | None], latents: np.ndarray, cond: np.ndarray, classes_Z,
                 spec: GridSpec, cfg: ConsistencyConfig = ConsistencyConfig()) -> list[Sites | None]:
    """Move each segmented crystal (in place) towards the one whose code is closest to its latent vector.

    ``sites[i]`` was decoded from ``latents[i]`` (B, D) under the one-hot condition ``cond[i]`` (B, K);
    ``None`` entries (maps that did not segment) are passed over. ``classes_Z`` (C,): element of each
    column of ``Sites.log_probs`` (0 = background, never tried). Returns the same list.
    """
    latents = np.asarray(latents, dtype=np.float64)
    cond = np.asarray(cond, dtype=np.float32)
    if len(sites) != len(latents) or len(sites) != len(cond):
        raise ValueError(f"{len(sites)} crystals but {len(latents)} latent vectors and {len(cond)} conditions")
    classes_Z = np.asarray(classes_Z, dtype=np.int64)
    score = _Scorer(vae, latents, cond, spec, cfg.batch_size)
    idx = [i for i, s in enumerate(sites) if s is not None and len(s.z)]
    if not idx:
        return sites
    for i in idx:
        s = sites[i]
        s.abc_A, s.z = np.asarray(s.abc_A, dtype=np.float64), np.asarray(s.z, dtype=np.int64).copy()
    first = score(idx, [(sites[i].z, sites[i].centroids_vox, sites[i].abc_A) for i in idx])
    for i, d in zip(idx, first):
        sites[i].residual = float(d)

    def candidates_of(s: Sites, k: int) -> list[int]:
        return [] if s.log_probs is None else site_elements(s, k, classes_Z, cfg.top_k, cfg.z_neighbours)

    def spare_elements(s: Sites, j: int) -> list[int]:
        order = np.argsort(-np.asarray(s.spare_log_probs[j]), kind="stable")
        return [int(classes_Z[c]) for c in order if classes_Z[c] > 0][:cfg.spare_k]

    iso = 1.0 + np.linspace(-cfg.cell_span, cfg.cell_span, cfg.cell_steps)
    axis = 1.0 + np.linspace(-cfg.axis_span, cfg.axis_span, cfg.axis_steps)
    active = list(idx)
    for r in range(cfg.rounds):
        before = {q: (sites[q].z.copy(), sites[q].abc_A.copy()) for q in active}
        # elements first: a wrong site pulls the best cell off more than a 3 % cell error hides the right
        # elements; sites are added or removed from the second round on, once the cell is near (with the
        # cell off, dropping a site can look better than keeping it)
        moving = list(active)
        for _ in range(cfg.species_passes):
            moving = _site_moves(sites, moving, score, candidates_of, spare_elements, add_remove=r > 0,
                                 group_moves=cfg.group_moves, add_margin=cfg.add_margin)
            if not moving:
                break
        if cfg.cell_span > 0:
            _cell_moves(sites, active, score, iso, per_axis=False)
        if cfg.axis_span > 0:
            _cell_moves(sites, active, score, axis, per_axis=True)
        # a crystal whose elements did not change and whose cell moved < 0.1 % is done (after round 2, the
        # first with every kind of move)
        if r == 0:
            continue
        active = [q for q in active if not np.array_equal(before[q][0], sites[q].z)
                  or np.max(np.abs(sites[q].abc_A / before[q][1] - 1)) > 1e-3]
        if not active:
            break
    return sites
