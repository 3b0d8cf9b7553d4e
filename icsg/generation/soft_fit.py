"""Fit segmented crystals to their latent vectors by gradient descent through the encoder, with soft elements.

Why: the round-trip refinement (``icsg.generation.consistency``) scores crystals by how close their code
comes to the latent vector z, and in reconstruction that score is exact (z is the code of the input
crystal, distance 0). Yet on perov_5 validation crystals every crystal it missed was a failure of the
search, not of the score: the input crystal, drawn at the read cell, lay closer to z than the search's
answer in all 52 misses of 64 (median code distance 0.0003 against 0.021). One element or one site at a
time, greedily, from a reading with half the elements wrong, does not get there. Here every site holds a
softmax over its likeliest elements, a sigmoid occupancy and a position, the cell a per-axis scale; the
map drawn from them by eq. 1 (a mixture of the elements' Gaussians) is encoded and the distance to z
minimised by Adam. The result is rounded (likeliest element, occupancy > 1/2) and handed to the discrete
search, which only has to polish it.

The gradient runs through the Keras encoder on the torch or the tensorflow backend. Part of the exact
reading (``ConsistencyConfig.soft_steps``, 0 = off): it leaves the search a start closer to the code, at
about a fifth more cost per crystal.

``position_fit`` is the same descent over the positions alone, elements and occupancies fixed: it runs after
the discrete search (``ConsistencyConfig.position_steps``), whose element moves cannot reach the truth from
positions 0.1-0.5 Å off.
"""

from __future__ import annotations

import numpy as np

from icsg.generation.consistency import Sites, z_neighbours
from icsg.grid import GridSpec
from icsg.representation.density import _NORM, _radius_of_Z


def _widths(elements_Z: np.ndarray, spec: GridSpec) -> np.ndarray:
    return np.array([spec.sigma_fixed_A or _radius_of_Z(int(z)) for z in elements_Z], dtype=np.float64)


def _value_and_grads(f, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """f(*tensors) -> (B,) losses; their values and the gradients of their sum w.r.t. each array."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        ts = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
        loss = f(*ts)
        loss.sum().backward()
        return loss.detach().cpu().numpy(), [t.grad.cpu().numpy() for t in ts]
    if backend == "tensorflow":
        import tensorflow as tf

        ts = [tf.convert_to_tensor(a, dtype=tf.float32) for a in arrays]
        with tf.GradientTape() as tape:
            for t in ts:
                tape.watch(t)
            loss = f(*ts)
            total = tf.reduce_sum(loss)
        return np.asarray(loss), [np.asarray(g) for g in tape.gradient(total, ts)]
    raise RuntimeError(f"the soft fit takes its gradients from the torch or tensorflow backend, and Keras runs on "
                       f"{backend}: set KERAS_BACKEND=torch, or turn the soft fit off (--soft-steps 0, "
                       "ConsistencyConfig(soft_steps=0))")


class _Adam:
    """Adam on numpy arrays, one learning rate per parameter group (the units differ: logits, Å, log cell)."""

    def __init__(self, params: list[np.ndarray], rates: list[float]):
        self.rates, self.t = rates, 0
        self.m1 = [np.zeros_like(a) for a in params]
        self.m2 = [np.zeros_like(a) for a in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        self.t += 1
        t, out = self.t, []
        for j, (p, g) in enumerate(zip(params, grads)):
            self.m1[j] = 0.9 * self.m1[j] + 0.1 * g
            self.m2[j] = 0.999 * self.m2[j] + 0.001 * g * g
            out.append(p - self.rates[j] * (self.m1[j] / (1 - 0.9**t)) / (np.sqrt(self.m2[j] / (1 - 0.999**t)) + 1e-8))
        return out


def render_soft(pos_A, weights, occupancy, abc_A, amp, sigma_A, spec: GridSpec):
    """Eq. 1 of soft sites (backend tensors): pos (B, K, 3) Å, element weights (B, K, E), occupancy (B, K),
    cell (B, 3) Å, amplitudes and widths of each candidate element (B, K, E) -> [M, C] (B, n, n, n, 4)."""
    from keras import ops

    n, p = spec.size, spec.padding
    idx = ops.arange(n, dtype="float32") + 0.5
    gs, axes = [], []
    for ax in range(3):
        length = abc_A[:, ax:ax + 1]
        x = -p * length + idx[None, :] * length * ((1 + 2 * p) / n)  # (B, n) voxel centres, Å
        axes.append(x / spec.length_scale_A)
        d2 = ops.square(x[:, None, None, :] - pos_A[:, :, ax, None, None])  # (B, K, 1, n)
        gs.append(ops.exp(-d2 / (2 * ops.square(sigma_A)[..., None])))  # (B, K, E, n)
    w = occupancy[:, :, None] * weights * amp
    dens = ops.einsum("bke,bkex,bkey,bkez->bxyz", w, *gs) / spec.density_scale
    ones = ops.ones((1, n, n, n), dtype="float32")
    coords = [ops.reshape(axes[0], (-1, n, 1, 1)) * ones, ops.reshape(axes[1], (-1, 1, n, 1)) * ones,
              ops.reshape(axes[2], (-1, 1, 1, n)) * ones]
    return ops.stack([dens] + coords, axis=-1)


def _soft_row(s: Sites, classes_Z, elem_cols, elements, k_el: int, z_width: int, spec: GridSpec) -> tuple:
    """(positions (n, 3) Å, candidate elements (n, k_el), their log-probabilities, occupancy logits) of one
    crystal's sites and spare positions (occupancy logit 2 and -1)."""
    vox, lp = s.centroids_vox, np.asarray(s.log_probs)
    occ = np.full(len(vox), 2.0)
    if s.spare_vox is not None and s.spare_log_probs is not None and len(s.spare_vox):
        vox, lp = np.vstack([vox, s.spare_vox]), np.vstack([lp, s.spare_log_probs])
        occ = np.r_[occ, np.full(len(s.spare_vox), -1.0)]
    lp = lp[:, elem_cols]
    # the current element's neighbours in Z always among the candidates (what decoding confuses)
    near = np.zeros_like(lp)
    for j, zj in enumerate(np.r_[s.z, np.full(len(vox) - len(s.z), -1)]):
        if zj > 0:
            near[j, np.isin(classes_Z[elem_cols], z_neighbours(int(zj), elements, z_width) + [int(zj)])] = 1e9
    cand = np.argsort(-(lp + near), axis=1, kind="stable")[:, :k_el]
    return spec.index_to_cartesian(vox, s.abc_A), classes_Z[elem_cols][cand], np.take_along_axis(lp, cand, 1), occ


def soft_fit(vae, sites: list[Sites | None], latents: np.ndarray, cond: np.ndarray, classes_Z, spec: GridSpec,
             steps: int = 60, top_k: int = 16, lr: float = 0.1, position_lr_A: float = 0.005,
             cell_lr: float = 0.0, z_width: int = 2) -> list[Sites | None]:
    """New ``Sites`` for every crystal (None stays None): elements among each site's ``top_k`` likeliest
    (``Sites.log_probs``, which also start the softmax), occupancies, positions and cell fitted so the
    drawn map's posterior mean approaches its latent vector; the spare positions enter as sites with
    occupancy 0.27 (logit -1). Crystals without class log-probabilities come back unchanged.

    ``cell_lr`` (per step, in log cell length) is 0 by default: the cell read from the code
    (``icsg.generation.latent_cell``) is better than what the fit makes of it. On 64 perov_5 validation
    crystals (200-263) 100 steps with the cell free (0.002) and positions at 0.01 Å/step matched 11 against
    12 for the discrete search alone, the cell MAE rising from 0.027 to 0.076 Å; 60 steps with the cell
    fixed and positions at 0.005 Å/step matched 15 (species 0.65 -> 0.70) at twice the cost.

    ``z_width``: each site's current element and its ``z_width`` neighbours on either side in Z are always
    among the candidates (``ConsistencyConfig.z_neighbours``), whatever rank the segmenter gives them."""
    classes_Z = np.asarray(classes_Z, dtype=np.int64)
    latents, cond = np.asarray(latents, np.float32), np.asarray(cond, np.float32)
    todo = [i for i, s in enumerate(sites) if s is not None and len(s.z) and s.log_probs is not None]
    out = list(sites)
    if not todo or steps <= 0:
        return out
    elem_cols = np.where(classes_Z > 0)[0]
    elements = np.sort(classes_Z[elem_cols])
    k_el = min(top_k, len(elem_cols))
    rows = [_soft_row(sites[i], classes_Z, elem_cols, elements, k_el, z_width, spec) for i in todo]
    B, K = len(todo), max(len(r[0]) for r in rows)
    pos, cz, logit = np.zeros((B, K, 3)), np.full((B, K, k_el), int(classes_Z[elem_cols][0])), np.zeros((B, K, k_el))
    occ_logit, mask = np.full((B, K), -20.0), np.zeros((B, K))
    for b, (p_, z_, l_, o_) in enumerate(rows):
        k = len(p_)
        pos[b, :k], cz[b, :k], occ_logit[b, :k], mask[b, :k] = p_, z_, o_, 1
        logit[b, :k] = l_ - l_.max(1, keepdims=True)
    sigma = _widths(cz.ravel(), spec).reshape(cz.shape)
    amp = _NORM * cz / sigma**3
    abc0 = np.stack([sites[i].abc_A for i in todo]).astype(np.float64)
    z_t, c_t = latents[todo], cond[todo]
    consts = [a.astype(np.float32) for a in (amp, sigma, mask, abc0, z_t, c_t)]

    def loss_fn(logit_t, occ_t, pos_t, scale_t, hard=False):
        from keras import ops

        amp_t, sigma_t, mask_t, abc_t, zz, cc = (ops.convert_to_tensor(a) for a in consts)
        abc = abc_t * ops.exp(scale_t)
        w, occ = ops.softmax(logit_t, axis=-1), ops.sigmoid(occ_t)
        if hard:  # straight through: the map of the rounded crystal, the gradient of the soft one
            w = w + ops.stop_gradient(ops.one_hot(ops.argmax(logit_t, axis=-1), k_el) - w)
            occ = occ + ops.stop_gradient(ops.cast(occ_t > 0, "float32") - occ)
        x = render_soft(pos_t * ops.exp(scale_t)[:, None, :], w, occ * mask_t, abc, amp_t, sigma_t, spec)
        mu = vae.encoder([x, cc], training=False)[0]
        return ops.mean(ops.square(mu - zz), axis=1)

    params = [logit, occ_logit, pos, np.zeros((B, 3))]
    adam = _Adam(params, [lr, lr, position_lr_A, cell_lr])
    for t in range(1, steps + 1):  # soft for the first half, then straight through
        hard = t > steps // 2
        _, grads = _value_and_grads(lambda *ts: loss_fn(*ts, hard=hard), params)
        params = adam.step(params, grads)
    logit, occ_logit, pos, scale = params
    for b, i in enumerate(todo):
        keep = (mask[b] > 0) & (occ_logit[b] > 0)
        if not keep.any():  # never empty a crystal: keep its most occupied site
            keep = np.zeros(K, bool)
            keep[int(np.argmax(np.where(mask[b] > 0, occ_logit[b], -np.inf)))] = True
        abc = abc0[b] * np.exp(scale[b])
        z = cz[b, np.arange(K), logit[b].argmax(1)][keep]
        vox = spec.cartesian_to_index(pos[b][keep] * np.exp(scale[b]), abc)
        out[i] = Sites(abc, z.astype(np.int64), vox)
    return out


def position_fit(vae, sites: list[Sites | None], latents: np.ndarray, cond: np.ndarray, spec: GridSpec,
                 steps: int = 100, lr_A: float = 0.01, cell_lr: float = 0.0) -> list[Sites | None]:
    """New ``Sites`` with the positions alone fitted so the crystal's code approaches its latent vector
    (elements, occupancy and cell fixed; the sites' class log-probabilities carried over, spares not); per crystal the positions of the lowest distance seen are kept, so
    the result is never farther from z than the start. None stays None.

    Why: segmented positions are 0.1-0.5 Å off on decoded maps, and from there the true elements are often
    farther from z than wrong ones, so element moves alone cannot find them
    (``ConsistencyConfig.position_steps``).

    ``cell_lr`` > 0 (per step, in log cell length per axis) frees the cell lengths too, the positions scaled
    with them (fractional coordinates kept): the exact fit of ``ConsistencyConfig.exact_below``."""
    latents, cond = np.asarray(latents, np.float32), np.asarray(cond, np.float32)
    todo = [i for i, s in enumerate(sites) if s is not None and len(s.z)]
    out = list(sites)
    if not todo or steps <= 0:
        return out
    B, K = len(todo), max(len(sites[i].z) for i in todo)
    # padding rows (mask 0) borrow a real element so that their width is defined
    pos, cz, mask = np.zeros((B, K, 3)), np.full((B, K, 1), int(sites[todo[0]].z[0])), np.zeros((B, K))
    for b, i in enumerate(todo):
        s, k = sites[i], len(sites[i].z)
        pos[b, :k], cz[b, :k, 0], mask[b, :k] = spec.index_to_cartesian(s.centroids_vox, s.abc_A), s.z, 1
    sigma = _widths(cz.ravel(), spec).reshape(cz.shape)
    abc0 = np.stack([np.asarray(sites[i].abc_A, np.float64) for i in todo])
    consts = [a.astype(np.float32) for a in (_NORM * cz / sigma**3, sigma, np.ones((B, K, 1)), mask, abc0,
                                              latents[todo], cond[todo])]

    def loss_fn(pos_t, scale_t):
        from keras import ops

        amp_t, sigma_t, w_t, mask_t, abc_t, zz, cc = (ops.convert_to_tensor(a) for a in consts)
        f = ops.exp(scale_t)
        x = render_soft(pos_t * f[:, None, :], w_t, mask_t, abc_t * f, amp_t, sigma_t, spec)
        mu = vae.encoder([x, cc], training=False)[0]
        return ops.mean(ops.square(mu - zz), axis=1)

    params = [pos, np.zeros((B, 3))]
    best, best_pos, best_scale = np.full(B, np.inf), pos.copy(), np.zeros((B, 3))
    adam = _Adam(params, [lr_A, cell_lr])
    for t in range(steps + 1):  # the last evaluation only scores the final positions
        loss, grads = _value_and_grads(loss_fn, params)
        better = loss < best
        best[better], best_pos[better], best_scale[better] = loss[better], params[0][better], params[1][better]
        if t < steps:
            params = adam.step(params, grads)
    for b, i in enumerate(todo):
        s, k = sites[i], len(sites[i].z)
        f = np.exp(best_scale[b])
        abc = abc0[b] * f
        out[i] = Sites(abc, np.asarray(s.z, np.int64).copy(), spec.cartesian_to_index(best_pos[b, :k] * f, abc),
                       log_probs=s.log_probs, residual=float(best[b]), moves=s.moves)
    return out
