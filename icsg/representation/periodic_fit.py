"""Reading atoms off a periodic map by fitting it: the positions and the atoms whose Gaussians sum to the map.

Peaks alone miss two atoms of one element closer than about their Gaussians' width (the O–O of a peroxide at
1.5 Å is one peak), and a light atom on a heavy neighbour's tail can come out as two. Every atom's amplitude
is fixed by its Z, so only the right set of atoms explains the map: least squares over every voxel leaves a
residual of ~1e-7 of the map for the right set and far more for a missing or an extra atom. A few edits are
tried (split an atom in two along its elongation, remove one, add one at the largest residual) and each is
kept when the refitted residual falls by a fifth.
"""

from __future__ import annotations

import numpy as np

from icsg.representation.periodic import CUTOFF_SIGMAS, PeriodicGrid, voxels_near, gaussian, width_A

SPLIT_A = 0.35  # half the separation the two halves of a split atom start from (Å)


def model_and_jacobian(frac: np.ndarray, z: np.ndarray, matrix: np.ndarray,
                       grid: PeriodicGrid = PeriodicGrid(),
                       jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(eq. 1 of the atoms (n³,) e/Å³, its derivative (n³, 3N) with respect to each atom's Cartesian
    position in Å, or None without ``jacobian``), periodic images and the renderer's 4 σ cut-off included."""
    n3 = grid.size**3
    model, jac = np.zeros(n3), (np.zeros((n3, 3 * len(z))) if jacobian else None)
    for i, (p, zi) in enumerate(zip(np.mod(frac, 1.0), z)):
        s = width_A(int(zi))
        idx, c = voxels_near(p, matrix, CUTOFF_SIGMAS * s, grid.size)
        g = gaussian(int(zi), s, c)
        model += np.bincount(idx, g, minlength=n3)
        for k in range(3 if jacobian else 0):
            jac[:, 3 * i + k] = np.bincount(idx, g * c[:, k] / (s * s), minlength=n3)
    return model, jac


def relative_residual(density: np.ndarray, z: np.ndarray, frac: np.ndarray, matrix: np.ndarray,
                      grid: PeriodicGrid = PeriodicGrid()) -> float:
    """‖map − atoms' eq. 1‖ / ‖map‖ (0 for the atoms the map was drawn from)."""
    m = np.asarray(density, dtype=np.float64).ravel() * grid.density_scale
    model, _ = model_and_jacobian(frac, z, matrix, grid, jacobian=False)
    return float(np.linalg.norm(m - model) / max(np.linalg.norm(m), 1e-12))


def fit_positions(density: np.ndarray, z: np.ndarray, frac: np.ndarray, matrix: np.ndarray,
                  grid: PeriodicGrid = PeriodicGrid(), iterations: int = 30) -> tuple[np.ndarray, float]:
    """(fractional positions (N, 3) that fit the map best in least squares, their relative residual):
    Levenberg–Marquardt on the atoms' Cartesian positions, steps capped at 0.5 Å per atom."""
    m = np.asarray(density, dtype=np.float64).ravel() * grid.density_scale
    norm = max(float(np.linalg.norm(m)), 1e-12)
    inv = np.linalg.inv(matrix)
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    model, jac = model_and_jacobian(frac, z, matrix, grid)
    r = m - model
    err, damping = float(np.linalg.norm(r)), 1e-3
    for _ in range(iterations):
        h, g = jac.T @ jac, jac.T @ r
        step = np.linalg.solve(h + damping * np.diag(np.diag(h) + 1e-12), g).reshape(-1, 3)
        step *= np.minimum(1.0, 0.5 / np.maximum(np.linalg.norm(step, axis=1), 1e-12))[:, None]
        trial = np.mod(frac + step @ inv, 1.0)
        t_model, t_jac = model_and_jacobian(trial, z, matrix, grid)
        t_err = float(np.linalg.norm(m - t_model))
        if t_err < err:
            frac, r, jac, damping = trial, m - t_model, t_jac, max(damping / 5, 1e-7)
            done = err - t_err < 1e-9 * norm or np.abs(step).max() < 1e-6
            err = t_err
            if done or err < 1e-7 * norm:
                break
        else:
            damping *= 10
            if damping > 1e6:
                break
    return frac, err / norm


def _edits(density, labels, z, frac, matrix, grid, per_kind: int = 2):
    """Candidate atom sets (z, frac): split the atoms the map under-explains most, remove those it
    over-explains most, add one at the largest residual (of the element labelled there)."""
    n = grid.size
    m = np.asarray(density, dtype=np.float64).ravel() * grid.density_scale
    model, _ = model_and_jacobian(frac, z, matrix, grid, jacobian=False)
    r = m - model
    score, axis = np.zeros(len(z)), np.zeros((len(z), 3))
    for i, (p, zi) in enumerate(zip(frac, z)):
        s = width_A(int(zi))
        idx, c = voxels_near(p, matrix, 2 * s, n)
        g = gaussian(int(zi), s, c)
        score[i] = float(r[idx] @ g / (g @ g))  # extra amplitude the map asks of this atom (1 = a whole atom)
        w = np.clip(r[idx], 0, None) * g
        axis[i] = np.linalg.eigh((c * w[:, None]).T @ c)[1][:, -1] if w.sum() > 0 else [1.0, 0, 0]
    inv = np.linalg.inv(matrix)

    def split(idx):
        halves = [frac[i] + np.outer([1, -1], axis[i] * SPLIT_A) @ inv for i in idx]
        return (np.concatenate([np.delete(z, idx), np.repeat(z[idx], 2)]),
                np.vstack([np.delete(frac, idx, 0), *halves]))

    out = [split([i]) for i in np.argsort(-score)[:per_kind] if score[i] > 0.2]
    every = np.flatnonzero(score > 0.5)
    if len(every) > 1:  # several merged pairs of one kind (each O2 of a peroxide): split them at once
        out.append(split(every))
    out += [(np.delete(z, i), np.delete(frac, i, 0)) for i in np.argsort(score)[:per_kind]
            if score[i] < -0.2 and len(z) > 1]
    v = int(np.argmax(r))
    if labels.ravel()[v] > 0 and r[v] > 0:
        f = (np.array(np.unravel_index(v, (n, n, n))) + 0.5) / n
        out.append((np.append(z, labels.ravel()[v]), np.vstack([frac, f])))
    return out


def select_atoms(density: np.ndarray, labels: np.ndarray, z: np.ndarray, frac: np.ndarray, matrix: np.ndarray,
                 grid: PeriodicGrid = PeriodicGrid(), tol: float = 1e-3,
                 max_edits: int = 6, screen_iterations: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """(elements (N',), fractional positions (N', 3), relative residual) of the atom set that explains the
    map: ``fit_positions`` from the peaks' atoms, then edits (``_edits``, each screened by a short fit, the
    best fitted in full) while the residual is above ``tol`` and an edit cuts it by a fifth."""
    z = np.asarray(z, dtype=np.int64)
    frac, err = fit_positions(density, z, frac, matrix, grid)
    for _ in range(max_edits):
        if err < tol:
            break
        trials = [(zc, *fit_positions(density, zc, fc, matrix, grid, iterations=screen_iterations))
                  for zc, fc in _edits(density, labels, z, frac, matrix, grid)]
        if not trials:
            break
        zc, fc, _ = min(trials, key=lambda t: t[2])
        fc, ec = fit_positions(density, zc, fc, matrix, grid)
        if ec > 0.8 * err:
            break
        z, frac, err = zc, fc, ec
    return z, frac, err
