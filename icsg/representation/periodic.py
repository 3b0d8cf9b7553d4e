"""Any lattice: the density map on a periodic grid over the unit cell, in fractional coordinates.

The cubic representation (``icsg.representation.density``) draws a crystal into a Cartesian box around its
cell, so its axes must be the cell's. Here voxel (i, j, k) is the point f = ((i, j, k) + 1/2) / n of the unit
cell in fractional coordinates, whatever the lattice: the map is periodic (a network can pad it by wrapping),
and every lattice fits the same n³ grid. The cell is the Niggli-reduced one in pymatgen's standard orientation
(a along x, b in the xy plane), so one crystal has one lattice matrix (its atoms up to the lattice's symmetry).
Eq. 1 sums each atom's Gaussian (``width_A``) over its periodic images; eq. 2 labels a voxel with the nearest
image's element within the label radius (and in the voxel it sits in, so that a small ion in a long cell
keeps a label). The coordinate channels hold each voxel centre's Cartesian position
f·L (Å / ``length_scale_A``): they carry the lattice L in the map, and L is read back from them exactly by
least squares.

The arrays are read back into a crystal by ``icsg.representation.periodic_decode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from icsg.errors import CrystalError
from icsg.representation.radii import ionic_radius_A

_NORM = (2 * np.pi) ** -1.5
CUTOFF_SIGMAS = 4.0  # Gaussian tails beyond 4 σ (3e-4 of the peak) are dropped


@dataclass(frozen=True)
class PeriodicGrid:
    """Args:
        size: voxels along each lattice vector.
        length_scale_A: the coordinate channels hold Cartesian Å divided by this.
        density_scale: the density channel holds eq. 1 (e/Å³) divided by this.
        label_radius_scale: labels cover d <= this × the ionic radius (as ``GridSpec``).
        max_sites: largest crystal taken (sites of the reduced cell); 20 is mp_20's limit, and a 32³ grid
            over a 20-site cell leaves a few voxels per atom along each axis.
    """

    size: int = 32
    length_scale_A: float = 10.0
    density_scale: float = 2.0
    label_radius_scale: float = 0.8
    max_sites: int = 20

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"PeriodicGrid.size must be >= 8, got {self.size}")
        if self.length_scale_A <= 0 or self.density_scale <= 0 or not 0 < self.label_radius_scale <= 2:
            raise ValueError("PeriodicGrid scales must be positive (label_radius_scale in (0, 2])")

    def to_dict(self) -> dict:
        return {"encoding": "periodic", **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_dict(cls, d: dict) -> "PeriodicGrid":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def fractions(self) -> np.ndarray:
        """(n³, 3) fractional coordinates of the voxel centres, in C order of (i, j, k)."""
        t = (np.arange(self.size) + 0.5) / self.size
        return np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)


@dataclass
class PeriodicEncoding:
    """density: M / density_scale, float32 (n, n, n); species: Z per voxel (0 empty), int16; occupancy: uint8;
    lattice: (a, b, c) Å and (α, β, γ) ° of the reduced cell, float64 (6,); coords: f·L / length_scale_A,
    float32 (n, n, n, 3); structure: the canonical cell the arrays describe (``canonical_cell``)."""

    density: np.ndarray
    species: np.ndarray
    occupancy: np.ndarray
    lattice: np.ndarray
    coords: np.ndarray
    structure: Structure


def canonical_cell(structure: Structure, grid: PeriodicGrid = PeriodicGrid(), item: str = "") -> Structure:
    """The Niggli-reduced cell in pymatgen's standard orientation, fractional coordinates in [0, 1); a
    CrystalError naming ``item`` for a disordered crystal or more than ``grid.max_sites`` sites."""
    name = item or structure.composition.reduced_formula
    if not structure.is_ordered:
        raise CrystalError(name, "disordered", "partial occupancies cannot be voxelised")
    try:
        red = structure.get_reduced_structure("niggli")
    except Exception as exc:  # pymatgen raises on degenerate lattices
        raise CrystalError(name, "unreadable", f"Niggli reduction failed: {exc}") from None
    if len(red) > grid.max_sites:
        raise CrystalError(name, "too_many_atoms", f"{len(red)} sites > {grid.max_sites}")
    frac = np.asarray(red.frac_coords)
    if np.linalg.det(red.lattice.matrix) < 0:  # a left-handed basis: -L and -f describe the same crystal
        frac = -frac
    lat = Lattice.from_parameters(*red.lattice.abc, *red.lattice.angles)  # right-handed, a along x
    return Structure(lat, red.species, np.mod(frac, 1.0))


MIN_WIDTH_A = 0.5


def gaussian(z: int, sigma_A: float, c: np.ndarray) -> np.ndarray:
    """Eq. 1's term of one atom (e/Å³) at Cartesian offsets ``c`` (m, 3) Å from it: Z N(0, σ² I)."""
    return _NORM * z / sigma_A**3 * np.exp(-np.einsum("ij,ij->i", c, c) / (2 * sigma_A * sigma_A))


@lru_cache(maxsize=None)
def width_A(z: int) -> float:
    """Gaussian width (Å) of element ``z``: its mean Shannon ionic radius (eq. 1), else (H, noble gases) its
    empirical atomic radius, never below ``MIN_WIDTH_A`` so that every atom's label sphere holds voxels."""
    el = Element.from_Z(int(z))
    r = ionic_radius_A(el.symbol, fallback_A=float(el.atomic_radius or 1.0))
    return max(float(r), MIN_WIDTH_A)


def voxels_near(p: np.ndarray, matrix: np.ndarray, reach_A: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxels within ``reach_A`` of fractional point ``p``, periodic images included: (flat voxel indices (m,),
    Cartesian vectors voxel centre − p (m, 3) Å). The indices run past the cell and wrap, so each image is one
    more voxel."""
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(matrix).T, axis=1)  # distance between lattice planes
    axes, diffs = [], []
    for k in range(3):
        w = reach_A / spacing[k]
        idx = np.arange(int(np.ceil((p[k] - w) * n - 0.5)), int(np.floor((p[k] + w) * n - 0.5)) + 1)
        axes.append(np.mod(idx, n))
        diffs.append((idx + 0.5) / n - p[k])
    g = matrix @ matrix.T  # metric tensor: |d·L|² = d G dᵀ, computed on the box before any vector is built
    d0, d1, d2 = diffs[0][:, None, None], diffs[1][None, :, None], diffs[2][None, None, :]
    r2 = (g[0, 0] * d0 * d0 + g[1, 1] * d1 * d1 + g[2, 2] * d2 * d2
          + 2 * (g[0, 1] * d0 * d1 + g[0, 2] * d0 * d2 + g[1, 2] * d1 * d2))
    i, j, k = np.nonzero(r2 <= reach_A * reach_A)
    c = np.stack([diffs[0][i], diffs[1][j], diffs[2][k]], 1) @ matrix
    return axes[0][i] * n * n + axes[1][j] * n + axes[2][k], c


def render_periodic(frac: np.ndarray, z: np.ndarray, matrix: np.ndarray, grid: PeriodicGrid = PeriodicGrid(),
                    label_radius_A: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eq. 1 / density_scale (n, n, n) float32, eq. 2 labels (n, n, n) int16) of atoms of elements ``z`` (N,)
    at fractional ``frac`` (N, 3) in the lattice ``matrix`` (rows a, b, c in Å), periodic images included."""
    z = np.asarray(z, dtype=np.int64)
    matrix = np.asarray(matrix, dtype=np.float64)
    sigma = np.array([width_A(int(k)) for k in z])
    label_r = sigma * grid.label_radius_scale if label_radius_A is None else np.asarray(label_radius_A)
    n = grid.size
    dens = np.zeros(n**3)
    best = np.full(n**3, np.inf)  # squared distance to the nearest labelling atom
    lab = np.zeros(n**3, np.int16)
    for p, zi, s, rl in zip(np.mod(np.asarray(frac, dtype=np.float64), 1.0), z, sigma, label_r):
        idx, c = voxels_near(p, matrix, CUTOFF_SIGMAS * s, n)
        dens += np.bincount(idx, gaussian(zi, s, c), minlength=n**3)
        idx, c = voxels_near(p, matrix, rl, n)
        own = np.floor(p * n).astype(int)  # the voxel the atom is in: every atom labels one, however small
        own_c = ((own + 0.5) / n - p) @ matrix
        idx = np.append(idx, (own[0] * n + own[1]) * n + own[2])
        nearest = np.full(n**3, np.inf)
        np.minimum.at(nearest, idx, np.append(np.einsum("ij,ij->i", c, c), own_c @ own_c))
        inside = nearest < best
        best[inside], lab[inside] = nearest[inside], zi
    return (dens / grid.density_scale).reshape(n, n, n).astype(np.float32), lab.reshape(n, n, n)


def coordinate_channels(matrix: np.ndarray, grid: PeriodicGrid = PeriodicGrid()) -> np.ndarray:
    """(n, n, n, 3) float32: Cartesian position f·L of each voxel centre, / length_scale_A."""
    n = grid.size
    return (grid.fractions() @ np.asarray(matrix) / grid.length_scale_A).reshape(n, n, n, 3).astype(np.float32)


def lattice_from_coordinates(coords: np.ndarray, grid: PeriodicGrid = PeriodicGrid()) -> np.ndarray:
    """(3, 3) lattice matrix (Å) that best maps the voxel fractions to the coordinate channels (least
    squares with an offset, so a decoded map's shift does not bias it); exact on true channels."""
    f = grid.fractions()
    x = np.asarray(coords, dtype=np.float64).reshape(-1, 3) * grid.length_scale_A
    design = np.hstack([f, np.ones((len(f), 1))])
    sol, *_ = np.linalg.lstsq(design, x, rcond=None)
    return sol[:3]


def encode_periodic(structure: Structure, grid: PeriodicGrid = PeriodicGrid(), item: str = "") -> PeriodicEncoding:
    """All arrays of one crystal of any lattice (its canonical cell, ``canonical_cell``)."""
    s = canonical_cell(structure, grid, item)
    matrix = s.lattice.matrix
    dens, lab = render_periodic(s.frac_coords, [site.specie.Z for site in s], matrix, grid)
    return PeriodicEncoding(dens, lab, (lab > 0).astype(np.uint8),
                            np.array([*s.lattice.abc, *s.lattice.angles], dtype=np.float64),
                            coordinate_channels(matrix, grid), s)
