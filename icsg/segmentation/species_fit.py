"""Species of segmented sites from the density profile itself (eq. 1 read backwards).

Eq. 1 gives every element its own Gaussian: height (2π)^(-3/2)·Z/r³ and width r (the
ionic radius, Å). Once segmentation has placed the sites, the species that explain a
map best are the ones whose Gaussians, summed, reproduce it:

    argmin over (e_1..e_K) of  Σ_v ( M_v − Σ_k g_v(e_k, x_k) )²,

    g_v(e, x) = (2π)^(-3/2) · Z_e / r_e³ · exp(−|v − x|² / (2 r_e²)) / density_scale.

The misfit is quadratic in the one-hot assignment; ``fit_species`` starts from a greedy
matching pursuit (and optionally the UNet's vote) and descends over pairs of sites.
``refine_positions`` moves sites to the density's matched-filter maximum. This is the "species from the
region's density profile" design: it uses the physics of the representation instead of
a learned classifier, so it is exact on true maps and degrades gracefully on decoded
ones. The UNet still supplies the occupancy mask that places the sites.
"""

from __future__ import annotations

import numpy as np

from icsg.grid import GridSpec
from icsg.representation.radii import has_radius, ionic_radius_A

_NORM = (2 * np.pi) ** -1.5


def candidate_table(elements_Z) -> tuple[np.ndarray, np.ndarray]:
    """(Z, r_Å) of the candidate elements that have an ionic radius."""
    from pymatgen.core import Element

    zs = [int(z) for z in elements_Z if has_radius(Element.from_Z(int(z)).symbol)]
    if not zs:
        raise ValueError("no candidate element with an ionic radius")
    return np.array(zs), np.array([ionic_radius_A(Element.from_Z(z).symbol) for z in zs])


def site_images(centroids_vox: np.ndarray, abc_A: np.ndarray, z: np.ndarray, r_A: np.ndarray,
                spec: GridSpec, stride: int = 1) -> np.ndarray:
    """g(e, x_k) for every site k and candidate e on every ``stride``-th voxel, float32 (K, E, n', n', n')."""
    pos = spec.index_to_cartesian(np.asarray(centroids_vox, dtype=np.float64), abc_A)
    axes = [spec.axis_centres_A(L)[::stride] for L in np.asarray(abc_A, dtype=np.float64)]
    # separable Gaussian: exp(-(dx²+dy²+dz²)/2r²) = Πexp(-d_a²/2r²); (K, E, n) per axis
    parts = [np.exp(-((axes[a][None, None, :] - pos[:, a, None, None]) ** 2) / (2 * r_A[None, :, None] ** 2))
             for a in range(3)]
    amp = (_NORM * z / r_A**3 / spec.density_scale)[None, :, None, None, None]
    return (amp * parts[0][..., :, None, None] * parts[1][..., None, :, None]
            * parts[2][..., None, None, :]).astype(np.float32)


def fit_species(density: np.ndarray, centroids_vox: np.ndarray, abc_A: np.ndarray, elements_Z,
                spec: GridSpec = GridSpec(), init_Z: np.ndarray | None = None,
                max_sweeps: int = 20, max_sites: int = 48, stride: int = 2,
                allow_empty: bool = False, log_prior: np.ndarray | None = None, prior_classes_Z=None,
                prior_weight: float = 0.0) -> np.ndarray:
    """Atomic number per site minimising the squared misfit of eq. 1 to ``density``.

    The misfit is a quadratic form in the one-hot assignment, so with b = <g, M> and the
    Gram matrix <g, g> precomputed, moves cost nothing in voxels. Single-site moves get
    stuck where neighbours compensate each other (La->Tl on the A site makes O look like
    Li on the faces), so the descent moves pairs of sites jointly; on perov_5 true maps
    this recovers the encoded species.

    Args:
        density: (n, n, n) normalised map (M / density_scale), true or decoded.
        centroids_vox: (K, 3) site positions in voxel index units (from segmentation).
        abc_A: cell lengths (Å), e.g. from the decoded coordinate channels.
        elements_Z: candidate elements (those the models were trained on).
        init_Z: a second starting assignment (e.g. the UNet vote); the better fit of it
            and a greedy matching-pursuit start is kept.
        stride: fit on every ``stride``-th voxel per axis (2: 8x less work; the Gaussians, r >= 0.6 Å,
            span several voxels, and on perov_5 true maps the answer is the same as at stride 1).
        allow_empty: add "no atom" (Z = 0, a zero image) to the candidates, so a spurious region of
            the segmentation is dropped when the map is better explained without it.
        log_prior: (K, C) log-probability of each class per site, e.g. the UNet's species softmax
            averaged around the site (``site_class_log_probs``); class c is element
            ``prior_classes_Z[c]``, Z = 0 the background (the prior of "no atom" under ``allow_empty``).
        prior_weight: w in  misfit − w·Σ_k log p_k(e_k). A decoded map's peak heights are a few
            per cent off, which is the whole difference between many elements' Gaussians (O/F, or
            cations of neighbouring Z/r³); the UNet's classifier sees the region's shape and
            context instead, so the two readings are combined (0 = density only).
        max_sites: above this many sites the (K·E)^2 Gram matrix is not built and
            ``init_Z`` is returned unchanged (a map that segments into that many sites
            is not a crystal of this data anyway).

    Returns:
        (K,) int atomic numbers.
    """
    cents = np.asarray(centroids_vox, dtype=np.float64).reshape(-1, 3)
    k_sites = len(cents)
    if k_sites == 0:
        return np.zeros(0, dtype=int)
    if k_sites > max_sites:
        if init_Z is None:
            raise ValueError(f"{k_sites} sites > max_sites={max_sites} and no initial species")
        return np.asarray(init_Z, dtype=int)
    cz, cr = candidate_table(elements_Z)
    g = site_images(cents, abc_A, cz, cr, spec, stride)
    if allow_empty:
        cz = np.append(cz, 0)
        g = np.concatenate([g, np.zeros(g.shape[:1] + (1,) + g.shape[2:], dtype=g.dtype)], axis=1)
    g = g.reshape(k_sites * len(cz), -1)
    m = np.asarray(density, dtype=np.float32)[::stride, ::stride, ::stride].reshape(-1)
    n_el = len(cz)
    b = (g @ m).reshape(k_sites, n_el).astype(np.float64)
    if log_prior is not None and prior_weight > 0:
        # energy = -2 b + quadratic terms, so a unary cost u enters as b - u/2
        b = b + 0.5 * prior_weight * _prior_columns(log_prior, prior_classes_Z, cz, k_sites)
    gram = (g @ g.T).reshape(k_sites, n_el, k_sites, n_el).astype(np.float64)
    index = {int(z): i for i, z in enumerate(cz)}
    starts = [_greedy(b, gram)]
    if init_Z is not None and all(int(z) in index for z in init_Z):
        starts.append(np.array([index[int(z)] for z in init_Z]))
    best, best_err = None, np.inf
    for choice in starts:
        choice = _descend_pairs(b, gram, choice, max_sweeps)
        err = _energy(b, gram, choice)
        if err < best_err:
            best, best_err = choice, err
    return cz[best].astype(int)


def _prior_columns(log_prior: np.ndarray, classes_Z, cz: np.ndarray, k_sites: int) -> np.ndarray:
    """(K, C) class log-probabilities -> (K, len(cz)) in the candidates' order; absent classes get the floor."""
    lp = np.asarray(log_prior, dtype=np.float64)
    classes_Z = [int(z) for z in classes_Z]
    if lp.shape != (k_sites, len(classes_Z)):
        raise ValueError(f"log_prior has shape {lp.shape}, expected ({k_sites}, {len(classes_Z)})")
    col = {z: i for i, z in enumerate(classes_Z)}
    floor = float(np.min(lp)) if lp.size else 0.0
    return np.stack([lp[:, col[int(z)]] if int(z) in col else np.full(k_sites, floor) for z in cz], axis=1)


def site_class_log_probs(probs: np.ndarray, centroids_vox: np.ndarray, radius_vox: float = 1.5,
                         eps: float = 1e-4) -> np.ndarray:
    """(K, C) log of the mean class probability over the voxels within ``radius_vox`` of each site.

    ``probs``: (n, n, n, C) softmax (e.g. the UNet's, rotation-averaged). A small sphere rather than the
    whole occupancy region: regions of a decoded map are misshapen and bleed into neighbours.
    """
    probs = np.asarray(probs)
    n = probs.shape[0]
    cents = np.asarray(centroids_vox, dtype=np.float64).reshape(-1, 3)
    r = int(np.ceil(radius_vox))
    off = np.array([(i, j, k) for i in range(-r, r + 1) for j in range(-r, r + 1) for k in range(-r, r + 1)
                    if i * i + j * j + k * k <= radius_vox**2])
    out = np.empty((len(cents), probs.shape[-1]))
    for s, c in enumerate(cents):
        idx = np.clip(np.round(c).astype(int)[None, :] + off, 0, n - 1)
        out[s] = probs[idx[:, 0], idx[:, 1], idx[:, 2]].mean(0)
    return np.log(np.clip(out, eps, None))


def _energy(b: np.ndarray, gram: np.ndarray, choice: np.ndarray) -> float:
    """||M − Σ g||² − ||M||²."""
    k = np.arange(len(choice))
    return float(-2 * b[k, choice].sum() + gram[k[:, None], choice[:, None], k[None, :], choice[None, :]].sum())


def _greedy(b: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """Matching pursuit: repeatedly fix the (site, element) that removes most misfit."""
    k_sites = b.shape[0]
    choice = np.full(k_sites, -1)
    cross = np.zeros_like(b)  # Σ over fixed sites j of <g[k, e], g[j, c_j]>
    self_norm = np.einsum("kee->ke", gram[np.arange(k_sites), :, np.arange(k_sites), :])
    for _ in range(k_sites):
        gain = 2 * b - self_norm - 2 * cross
        gain[choice >= 0] = -np.inf
        k, e = np.unravel_index(int(np.argmax(gain)), gain.shape)
        choice[k] = e
        cross += gram[:, :, k, e]
    return choice


def _descend_pairs(b: np.ndarray, gram: np.ndarray, choice: np.ndarray, max_sweeps: int) -> np.ndarray:
    """Coordinate descent over pairs (k, l): both sites take the jointly best elements."""
    choice = choice.copy()
    k_sites = len(choice)
    sites = np.arange(k_sites)
    self_norm = np.einsum("kee->ke", gram[sites, :, sites, :])
    pairs = [(k, k) for k in sites] if k_sites == 1 else [(k, l) for k in sites for l in sites if k < l]
    for _ in range(max_sweeps):
        changed = False
        for k, l in pairs:
            others = [j for j in sites if j != k and j != l]
            # field of the fixed sites on each candidate of k and of l
            fk = gram[k, :, others, choice[others]].sum(0) if others else np.zeros(b.shape[1])
            fl = gram[l, :, others, choice[others]].sum(0) if others else np.zeros(b.shape[1])
            ck = -2 * b[k] + self_norm[k] + 2 * fk
            if k == l:
                e = int(np.argmin(ck))
                if e != choice[k]:
                    choice[k], changed = e, True
                continue
            cl = -2 * b[l] + self_norm[l] + 2 * fl
            cost = ck[:, None] + cl[None, :] + 2 * gram[k, :, l, :]
            e, f = np.unravel_index(int(np.argmin(cost)), cost.shape)
            if cost[e, f] < cost[choice[k], choice[l]] - 1e-9:
                choice[k], choice[l], changed = e, f, True
        if not changed:
            break
    return choice


def refine_positions(density: np.ndarray, centroids_vox: np.ndarray, abc_A: np.ndarray, z: np.ndarray,
                     spec: GridSpec = GridSpec(), window_vox: float = 2.0, sweeps: int = 10,
                     tol_vox: float = 0.05) -> np.ndarray:
    """Move each site to the maximum of the matched filter of what the other sites leave.

    For a Gaussian g_x of fixed height A and width r, ||R − g_x||² is smallest where

        J(x) = 2·<R, g_x> − ||g_x||²_box = 2A·S·(R ∗ w_r)(x) − A²·S'·(1_box ∗ w_{r/√2})(x)

    is largest (w = normalised Gaussian kernels, S, S' their unnormalised sums); the second
    term matters because a site near the box face loses part of its Gaussian. Searched within
    ``window_vox`` of the segmentation centroid (a misshapen occupancy region biases it),
    refined below the voxel by a parabola per axis.
    """
    from scipy import ndimage

    cents = np.asarray(centroids_vox, dtype=np.float64).reshape(-1, 3).copy()
    if len(cents) == 0:
        return cents
    from pymatgen.core import Element

    zs = np.asarray(z, dtype=int)
    r = np.array([ionic_radius_A(Element.from_Z(int(k)).symbol) for k in zs])
    h = spec.voxel_size_A(np.asarray(abc_A, dtype=np.float64))
    m = np.asarray(density, dtype=np.float64)
    n = m.shape[0]

    def image(k):
        return site_images(cents[k:k + 1], abc_A, zs[k:k + 1], r[k:k + 1], spec)[0, 0].astype(np.float64)

    def kernel_sum(sig, power):  # Σ_u exp(-power·u²/(2σ²)) over the integer grid, product over axes
        out = 1.0
        for sa in sig:
            u = np.arange(-int(4 * sa) - 1, int(4 * sa) + 2)
            out *= np.exp(-power * u**2 / (2 * sa**2)).sum()
        return out

    amp = _NORM * zs / r**3 / spec.density_scale
    sigmas = [r[k] / h for k in range(len(cents))]
    # ||g_x||² over the box depends on the site's width only, not on the residual: once per site
    box = np.ones_like(m)
    norm_term = [amp[k] ** 2 * kernel_sum(sigmas[k], 2)
                 * ndimage.gaussian_filter(box, sigma=sigmas[k] / np.sqrt(2), mode="constant")
                 for k in range(len(cents))]
    imgs = [image(k) for k in range(len(cents))]
    model = np.sum(imgs, axis=0)
    for _ in range(sweeps):
        moved = 0.0
        for k in range(len(cents)):
            resid = m - (model - imgs[k])
            sig = sigmas[k]
            resp = (2 * amp[k] * kernel_sum(sig, 1) * ndimage.gaussian_filter(resid, sigma=sig, mode="constant")
                    - norm_term[k])
            lo = np.clip(np.floor(cents[k] - window_vox).astype(int), 0, n - 1)
            hi = np.clip(np.ceil(cents[k] + window_vox).astype(int) + 1, 1, n)
            sub = resp[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            best = np.array(np.unravel_index(int(np.argmax(sub)), sub.shape)) + lo
            pos = best.astype(np.float64)
            for ax in range(3):
                if 0 < best[ax] < n - 1:
                    a_idx, c_idx = best.copy(), best.copy()
                    a_idx[ax] -= 1
                    c_idx[ax] += 1
                    a, b, c = resp[tuple(a_idx)], resp[tuple(best)], resp[tuple(c_idx)]
                    denom = a - 2 * b + c
                    if denom < 0:
                        pos[ax] += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
            moved = max(moved, float(np.abs(pos - cents[k]).max()))
            cents[k] = pos
            new = image(k)
            model += new - imgs[k]
            imgs[k] = new
        if moved < tol_vox:  # overlapping Gaussians settle together over several sweeps
            break
    return cents
