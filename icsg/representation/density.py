"""Crystal -> voxel arrays (paper eqs. 1-3) and the CoordConv grid.

All functions are pure: a pymatgen ``Structure`` (orthogonal cell) and a ``GridSpec``
in, numpy arrays out. Shapes: n = ``spec.size``; maps are (n, n, n) indexed [x, y, z];
the coordinate grid is (n, n, n, 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Element, Structure

from icsg.errors import CrystalError
from icsg.grid import GridSpec
from icsg.representation.radii import ionic_radius_A

_NORM = (2 * np.pi) ** -1.5
_ORTHO_TOL_DEG = 0.5


@dataclass
class Encoding:
    """One crystal in the voxel representation.

    Attributes:
        density: M / spec.density_scale, float32 (n, n, n).
        species: S, atomic number per voxel (0 = empty), int16 (n, n, n).
        occupancy: S_B, 1 inside a label sphere, uint8 (n, n, n).
        abc_A: cell lengths (a, b, c) in Å, float64 (3,).
        coords: C / spec.length_scale_A, float32 (n, n, n, 3).
    """

    density: np.ndarray
    species: np.ndarray
    occupancy: np.ndarray
    abc_A: np.ndarray
    coords: np.ndarray


def cell_lengths_A(structure: Structure, item: str = "") -> np.ndarray:
    """(a, b, c) in Å, after checking the cell is orthogonal (the grid's axes are)."""
    angles = np.asarray(structure.lattice.angles)
    if np.any(np.abs(angles - 90.0) > _ORTHO_TOL_DEG):
        raise CrystalError(item or structure.composition.reduced_formula, "non_cubic",
                           f"cell angles {np.round(angles, 2).tolist()} are not 90 degrees")
    return np.asarray(structure.lattice.abc, dtype=np.float64)


def site_arrays(structure: Structure, spec: GridSpec, item: str = ""):
    """Cartesian positions (N, 3) Å in the cell frame, Z (N,), Gaussian widths and label radii (N,) Å."""
    if not structure.is_ordered:
        raise CrystalError(item or structure.composition.formula, "disordered",
                           "partial occupancies cannot be voxelised")
    abc = cell_lengths_A(structure, item)
    pos = np.asarray(structure.frac_coords, dtype=np.float64) * abc
    symbols = [site.specie.symbol for site in structure]
    z = np.array([site.specie.Z for site in structure], dtype=np.int16)
    r = np.array([ionic_radius_A(s, item=item or structure.composition.reduced_formula) for s in symbols])
    sigma = np.full_like(r, spec.sigma_fixed_A) if spec.sigma_fixed_A else r
    return abc, pos, z, sigma, r * spec.label_radius_scale


def _squared_distances(pos: np.ndarray, abc: np.ndarray, spec: GridSpec) -> np.ndarray:
    """d(i, v)^2 in Å^2 for every site i and voxel v, shape (N, n, n, n). No periodic images."""
    axes = [spec.axis_centres_A(L) for L in abc]
    dx = (axes[0][None, :] - pos[:, 0:1]) ** 2
    dy = (axes[1][None, :] - pos[:, 1:2]) ** 2
    dz = (axes[2][None, :] - pos[:, 2:3]) ** 2
    return dx[:, :, None, None] + dy[:, None, :, None] + dz[:, None, None, :]


def render_density(pos_A: np.ndarray, z: np.ndarray, sigma_A: np.ndarray, abc_A: np.ndarray,
                   spec: GridSpec = GridSpec()) -> np.ndarray:
    """Eq. 1 / ``spec.density_scale`` of sites at Cartesian ``pos_A`` (N, 3) Å in a cell of ``abc_A``.

    Each Gaussian factorises over the three axes, so the map is a sum of N outer products:
    O(N·n) exponentials instead of O(N·n³), which is what makes rendering many candidate
    crystals cheap (``icsg.generation.consistency``). float32 (n, n, n).
    """
    pos = np.asarray(pos_A, dtype=np.float64).reshape(-1, 3)
    sigma = np.asarray(sigma_A, dtype=np.float64)
    amp = _NORM * np.asarray(z, dtype=np.float64) / sigma**3
    g = [np.exp(-(spec.axis_centres_A(L)[None, :] - pos[:, k:k + 1]) ** 2 / (2 * sigma[:, None] ** 2))
         for k, L in enumerate(np.asarray(abc_A, dtype=np.float64))]
    m = np.einsum("i,ix,iy,iz->xyz", amp, *g, optimize=True)
    return (m / spec.density_scale).astype(np.float32)


def sites_density(z: np.ndarray, centroids_vox: np.ndarray, abc_A: np.ndarray,
                  spec: GridSpec = GridSpec()) -> np.ndarray:
    """Eq. 1 of sites given as (Z, fractional voxel indices) in a cell of ``abc_A``: the map the encoder
    would see for a segmented crystal. Widths as in ``site_arrays`` (ionic radius or ``spec.sigma_fixed_A``)."""
    z = np.asarray(z, dtype=np.int64)
    sigma = np.array([spec.sigma_fixed_A or _radius_of_Z(int(k)) for k in z], dtype=np.float64)
    return render_density(spec.index_to_cartesian(centroids_vox, abc_A), z, sigma, abc_A, spec)


@lru_cache(maxsize=None)
def _radius_of_Z(z: int) -> float:
    return ionic_radius_A(Element.from_Z(z).symbol)


def _species(d2: np.ndarray, z: np.ndarray, radius: np.ndarray) -> np.ndarray:
    d2 = np.where(d2 <= radius[:, None, None, None] ** 2, d2, np.inf)
    inside = np.isfinite(np.min(d2, axis=0))
    return np.where(inside, z[np.argmin(d2, axis=0)], 0).astype(np.int16)


def density_map(structure: Structure, spec: GridSpec = GridSpec(), item: str = "") -> np.ndarray:
    """Eq. 1, divided by ``spec.density_scale``:

        M_v = (2π)^(-3/2) Σ_i Z_i / r_i^3 · exp(-d(i, v)^2 / (2 r_i^2))

    with r_i the ionic radius (Å) of site i. Returns float32 (n, n, n).
    """
    abc, pos, z, sigma, _ = site_arrays(structure, spec, item)
    return render_density(pos, z, sigma, abc, spec)


def species_matrix(structure: Structure, spec: GridSpec = GridSpec(), item: str = "") -> np.ndarray:
    """Eq. 2: S_v = Z_i of the closest site i with d(i, v) <= label radius, else 0. int16 (n, n, n)."""
    abc, pos, z, _, radius = site_arrays(structure, spec, item)
    return _species(_squared_distances(pos, abc, spec), z, radius)


def occupancy_mask(species: np.ndarray) -> np.ndarray:
    """Eq. 3: S_B = 1 where a label sphere covers the voxel. uint8, same shape."""
    return (np.asarray(species) > 0).astype(np.uint8)


def coordinate_grid(abc_A: np.ndarray, spec: GridSpec = GridSpec()) -> np.ndarray:
    """CoordConv channels: Cartesian (x, y, z) of each voxel centre / length_scale_A. float32 (n, n, n, 3)."""
    axes = [spec.axis_centres_A(L) / spec.length_scale_A for L in np.asarray(abc_A, dtype=np.float64)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.astype(np.float32)


def vae_input(density: np.ndarray, abc_A: np.ndarray, spec: GridSpec = GridSpec()) -> np.ndarray:
    """[M, C] of stored maps: (k, n, n, n) densities and (k, 3) cell lengths (Å) -> (k, n, n, n, 4) float32."""
    coords = np.stack([coordinate_grid(abc, spec) for abc in np.asarray(abc_A)])
    return np.concatenate([np.asarray(density)[..., None], coords], -1).astype(np.float32)


def encode(structure: Structure, spec: GridSpec = GridSpec(), item: str = "") -> Encoding:
    """All arrays of one crystal (M, S, S_B, lattice lengths, C)."""
    abc, pos, z, sigma, radius = site_arrays(structure, spec, item)
    d2 = _squared_distances(pos, abc, spec)
    s = _species(d2, z, radius)
    return Encoding(
        density=render_density(pos, z, sigma, abc, spec),
        species=s,
        occupancy=occupancy_mask(s),
        abc_A=abc,
        coords=coordinate_grid(abc, spec),
    )
