"""Reading a periodic map back into a crystal: atoms at the density peaks of each element's label region, then
fitted to the whole map (``icsg.representation.periodic_fit``).

The arrays are tiled 3 × 3 × 3 by wrapping, each element's label region is split into atoms at the map's
peaks (watershed), only atoms inside the central cell are kept, and each is moved to the vertex of a
quadratic fitted to log(M − its neighbours' Gaussians) around it (``refine_positions``), exact for one
Gaussian. Where that leaves the map unexplained (close pairs of one element, a light atom on a heavy tail),
least squares over every voxel and a few edits of the atom set finish the reading.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from icsg.representation.periodic import (PeriodicGrid, gaussian, lattice_from_coordinates, render_periodic,
                                          width_A)
from icsg.representation.periodic_fit import relative_residual, select_atoms

_OFFSETS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
_DESIGN = np.column_stack([np.ones(27), _OFFSETS, _OFFSETS**2, _OFFSETS[:, 0] * _OFFSETS[:, 1],
                           _OFFSETS[:, 0] * _OFFSETS[:, 2], _OFFSETS[:, 1] * _OFFSETS[:, 2]])


def peak_offset(log_m: np.ndarray, max_offset: float = 1.0) -> np.ndarray | None:
    """Offset (3,) in voxels of the maximum of a quadratic fitted to log M over 27 voxels around a point
    (``log_m`` (3, 3, 3)), exact for one Gaussian; None when the fit has no maximum within ``max_offset``."""
    c, *_ = np.linalg.lstsq(_DESIGN, log_m.reshape(27), rcond=None)
    g = c[1:4]
    h = np.array([[2 * c[4], c[7], c[8]], [c[7], 2 * c[5], c[9]], [c[8], c[9], 2 * c[6]]])
    try:
        v = np.linalg.solve(h, -g)
    except np.linalg.LinAlgError:
        return None
    if np.any(np.linalg.eigvalsh(h) >= 0) or np.any(np.abs(v) > max_offset):
        return None
    return v


def _markers(m: np.ndarray, mask: np.ndarray, is_peak: np.ndarray, ball_voxels: float) -> np.ndarray:
    """Watershed markers of one element's label region. The label balls count the atoms: a connected part of
    k ≈ size / ``ball_voxels`` balls (one atom's ball, less where a nearer atom took voxels) holds k atoms.
    One atom: its highest voxel. Several: the map's peaks in the part when there are k of them (tied voxels
    one peak), else k-means centres of the part's voxels (the Gaussians of two O of a peroxide merge into
    one peak; same-element Gaussians overlapping into a flat map have peaks off the atoms). A part that runs
    through the tiled arrays (a chain along a short axis) is split at its peaks."""
    from scipy import ndimage
    from scipy.cluster.vq import kmeans2

    parts, n_parts = ndimage.label(mask)
    peak_ids = ndimage.label(is_peak & mask, structure=np.ones((3, 3, 3)))[0].ravel()
    markers = np.zeros(m.shape, np.int32)
    flat_parts, flat_m = parts.ravel(), m.ravel()
    order = np.argsort(flat_parts, kind="stable")
    bounds = np.searchsorted(flat_parts[order], np.arange(1, n_parts + 2))
    edge = set(np.unique(np.concatenate([parts[0].ravel(), parts[-1].ravel(), parts[:, 0].ravel(),
                                         parts[:, -1].ravel(), parts[:, :, 0].ravel(), parts[:, :, -1].ravel()])))
    k = 0
    for part in range(1, n_parts + 1):
        sel = order[bounds[part - 1]:bounds[part]]
        n_atoms = max(1, int(round(len(sel) / ball_voxels)))
        peaks = sel[peak_ids[sel] > 0]
        ids, inverse = np.unique(peak_ids[peaks], return_inverse=True)
        if n_atoms == 1 and part not in edge:
            seeds = [sel[np.argmax(flat_m[sel])]]
        elif len(ids) == n_atoms or (part in edge and len(ids) > 0):
            markers.ravel()[peaks] = inverse.ravel() + 1 + k
            k += len(ids)
            continue
        else:
            xyz = np.column_stack(np.unravel_index(sel, m.shape)).astype(float)
            centres, _ = kmeans2(xyz, n_atoms, minit="++", seed=0)
            seeds = [sel[np.argmin(((xyz - c) ** 2).sum(1))] for c in centres]
        for v in seeds:
            k += 1
            markers.ravel()[v] = k
    return markers


def check_lattice(matrix: np.ndarray, min_spacing_A: float = 0.5, max_length_A: float = 100.0) -> np.ndarray:
    """``matrix`` if it is a cell a crystal can have, else ValueError saying why: a decoded map's coordinate
    channels can describe a flat or huge cell, whose Gaussians would cover millions of periodic images."""
    det = float(np.linalg.det(matrix))
    lengths = np.linalg.norm(matrix, axis=1)
    spacing = abs(det) / np.linalg.norm(np.cross(matrix[[1, 2, 0]], matrix[[2, 0, 1]]), axis=1).clip(1e-12)
    if det <= 0 or spacing.min() < min_spacing_A or lengths.max() > max_length_A:
        raise ValueError(f"implausible cell read from the coordinate channels: lengths {np.round(lengths, 2)} Å, "
                         f"lattice-plane spacing {spacing.min():.3f} Å, determinant {det:.3g} Å³")
    return matrix


def decode_periodic(density: np.ndarray, species: np.ndarray, coords: np.ndarray,
                    grid: PeriodicGrid = PeriodicGrid(), fit_tol: float | None = 1e-5,
                    max_atoms: int | None = None) -> Structure:
    """The crystal of periodic arrays: lattice from the coordinate channels, one atom per density peak of each
    element's label region (``_markers``; watershed, the arrays tiled by wrapping), placed where the map says
    (``refine_positions``); where the atoms then leave more than ``fit_tol`` of the map unexplained (relative
    L2), the atom set is fitted to the whole map (``select_atoms``; None skips that). More than ``max_atoms``
    atoms is a ValueError (decoded maps: reading hundreds of spurious atoms costs minutes)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    n, pad = grid.size, grid.size  # 3 × 3 × 3 cells: a label ball can span most of a thin cell
    matrix = check_lattice(lattice_from_coordinates(coords, grid))
    lab = np.pad(np.asarray(species), pad, mode="wrap")
    m = np.pad(np.asarray(density, dtype=np.float64), pad, mode="wrap")
    is_peak = m >= ndimage.maximum_filter(m, size=3, mode="nearest") * (1 - 1e-6)
    zs, fracs = [], []
    voxel_A3 = abs(np.linalg.det(matrix)) / n**3
    for z in np.unique(lab[lab > 0]):
        mask = lab == z
        ball = 4 / 3 * np.pi * (width_A(int(z)) * grid.label_radius_scale) ** 3 / voxel_A3
        markers = _markers(m, mask, is_peak, ball)
        regions = watershed(-m, markers, mask=mask)
        for r, sl in enumerate(ndimage.find_objects(regions), start=1):
            if sl is None:
                continue
            inside = regions[sl] == r
            p = np.array(np.unravel_index(np.argmax(np.where(inside, m[sl], -np.inf)), inside.shape)) + \
                [q.start for q in sl]
            if np.any(p < pad) or np.any(p >= pad + n) or any(q.start == 0 or q.stop == 3 * n for q in sl):
                continue  # another image's copy of an atom of the cell, or a copy cut by the tiling's edge
            centroid = np.argwhere(inside).mean(0) + [q.start for q in sl]
            zs.append(int(z))
            fracs.append(np.mod((centroid + 0.5 - pad) / n, 1.0))
    if not zs:
        raise ValueError("no atoms in the map")
    if max_atoms is not None and len(zs) > max_atoms:  # a decoded map no crystal of the training sizes explains
        raise ValueError(f"{len(zs)} atoms in the map > {max_atoms}")
    z, fracs = np.array(zs), refine_positions(np.asarray(density), np.array(zs), np.array(fracs), matrix, grid)
    if fit_tol is not None and relative_residual(density, z, fracs, matrix, grid) > fit_tol:
        z, fracs, _ = select_atoms(np.asarray(density), np.asarray(species), z, fracs, matrix, grid, tol=fit_tol)
    return Structure(Lattice(matrix), [Element.from_Z(int(k)) for k in z], fracs)


def refine_positions(density: np.ndarray, z: np.ndarray, frac: np.ndarray, matrix: np.ndarray,
                     grid: PeriodicGrid = PeriodicGrid(), iterations: int = 6) -> np.ndarray:
    """Atom positions (N, 3) fractional that explain the map: each atom moved, all at once, to the quadratic
    vertex of log(map − every other Gaussian, its own other images included) over the 27 voxels around it.
    Where atoms' tails overlap, the peak of the map is not at any atom; what is left after the neighbours are
    taken away is one Gaussian, whose vertex is exact. A few rounds, as the neighbours' positions improve."""
    n = grid.size
    m = np.asarray(density, dtype=np.float64).ravel() * grid.density_scale
    sigma = np.array([width_A(int(k)) for k in z])
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    for _ in range(iterations):
        total = render_periodic(frac, z, matrix, grid)[0].ravel().astype(np.float64) * grid.density_scale
        new = frac.copy()
        for i, (p, zi, s) in enumerate(zip(frac, z, sigma)):
            centre = np.round(p * n - 0.5).astype(int)
            vox = centre + _OFFSETS
            own = gaussian(int(zi), s, ((vox + 0.5) / n - p) @ matrix)  # this image only
            flat = np.ravel_multi_index(tuple(np.mod(vox, n).T), (n, n, n))
            rest = m[flat] - total[flat] + own
            if np.any(rest <= 0):
                continue
            v = peak_offset(np.log(rest).reshape(3, 3, 3), max_offset=3.0)
            if v is not None:
                new[i] = np.mod((centre + v + 0.5) / n, 1.0)
        frac = new
    return frac
