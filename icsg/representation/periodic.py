"""Any lattice: the density map on a periodic grid over the unit cell, in fractional coordinates.

The cubic representation (``icsg.representation.density``) draws a crystal into a Cartesian box around its
cell, so its axes must be the cell's. Here voxel (i, j, k) is the point f = ((i, j, k) + 1/2) / n of the unit
cell in fractional coordinates, whatever the lattice: the map is periodic (a network can pad it by wrapping),
and every lattice fits the same n³ grid. The cell is the Niggli-reduced one in pymatgen's standard orientation
(a along x, b in the xy plane), so one crystal has one lattice matrix (its atoms up to the lattice's symmetry).
Eq. 1 sums each atom's Gaussian (``width_A``) over its periodic images; eq. 2 labels a voxel with the nearest
image's element within the label radius. The coordinate channels hold each voxel centre's Cartesian position
f·L (Å / ``length_scale_A``): they carry the lattice L in the map, and L is read back from them exactly by
least squares.

Reading the true arrays back (``decode_periodic``): the arrays are tiled by wrapping, each element's label
region is split into atoms at the map's peaks (watershed), only atoms inside the central cell are kept, and
each is moved to the vertex of a quadratic fitted to log(M − its neighbours' Gaussians) around it, exact for
one Gaussian (``refine_positions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from icsg.errors import CrystalError
from icsg.representation.radii import ionic_radius_A

_NORM = (2 * np.pi) ** -1.5
_CUTOFF_SIGMAS = 4.0  # Gaussian tails beyond 4 σ (3e-4 of the peak) are dropped


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


@lru_cache(maxsize=None)
def width_A(z: int) -> float:
    """Gaussian width (Å) of element ``z``: its mean Shannon ionic radius (eq. 1), else (H, noble gases) its
    empirical atomic radius, never below ``MIN_WIDTH_A`` so that every atom's label sphere holds voxels."""
    el = Element.from_Z(int(z))
    r = ionic_radius_A(el.symbol, fallback_A=float(el.atomic_radius or 1.0))
    return max(float(r), MIN_WIDTH_A)


def _window(p: np.ndarray, matrix: np.ndarray, reach_A: float, n: int):
    """Voxels within ``reach_A`` of fractional point ``p``, periodic images included: (flat voxel indices (m,),
    squared distances (m,) Å²). The indices run past the cell and wrap, so each image is one more voxel."""
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(matrix).T, axis=1)  # distance between lattice planes
    axes, diffs = [], []
    for k in range(3):
        w = reach_A / spacing[k]
        idx = np.arange(int(np.ceil((p[k] - w) * n - 0.5)), int(np.floor((p[k] + w) * n - 0.5)) + 1)
        axes.append(np.mod(idx, n))
        diffs.append((idx + 0.5) / n - p[k])
    c = (diffs[0][:, None, None, None] * matrix[0] + diffs[1][None, :, None, None] * matrix[1]
         + diffs[2][None, None, :, None] * matrix[2])
    d2 = np.einsum("abcx,abcx->abc", c, c).ravel()
    flat = (axes[0][:, None, None] * n * n + axes[1][None, :, None] * n + axes[2][None, None, :]).ravel()
    keep = d2 <= reach_A * reach_A
    return flat[keep], d2[keep]


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
        idx, d2 = _window(p, matrix, _CUTOFF_SIGMAS * s, n)
        dens += np.bincount(idx, _NORM * zi / s**3 * np.exp(-d2 / (2 * s * s)), minlength=n**3)
        idx, d2 = _window(p, matrix, rl, n)
        nearest = np.full(n**3, np.inf)
        np.minimum.at(nearest, idx, d2)
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


def _markers(m: np.ndarray, mask: np.ndarray, is_peak: np.ndarray) -> np.ndarray:
    """Watershed markers of one element's label region: the map's peaks in it (tied voxels one peak), and the
    highest voxel of each part of the region without a peak of its own (a light atom whose Gaussian sits on a
    heavy neighbour's tail). Two atoms of one element whose Gaussians merge into one peak (O–O in a peroxide)
    stay one atom."""
    from scipy import ndimage

    markers, k = ndimage.label(is_peak & mask, structure=np.ones((3, 3, 3)))
    parts, n_parts = ndimage.label(mask)
    unmarked = np.setdiff1d(np.arange(1, n_parts + 1), np.unique(parts[markers > 0]))
    for part in unmarked:
        k += 1
        sel = np.flatnonzero((parts == part).ravel())
        markers.ravel()[sel[np.argmax(m.ravel()[sel])]] = k
    return markers


def decode_periodic(density: np.ndarray, species: np.ndarray, coords: np.ndarray,
                    grid: PeriodicGrid = PeriodicGrid()) -> Structure:
    """The crystal of periodic arrays: lattice from the coordinate channels, one atom per density peak of each
    element's label region (``_markers``; watershed, the arrays tiled by wrapping), placed where the map says
    (``refine_positions``)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    n, pad = grid.size, grid.size  # 3 × 3 × 3 cells: a label ball can span most of a thin cell
    matrix = lattice_from_coordinates(coords, grid)
    lab = np.pad(np.asarray(species), pad, mode="wrap")
    m = np.pad(np.asarray(density, dtype=np.float64), pad, mode="wrap")
    is_peak = m >= ndimage.maximum_filter(m, size=3, mode="nearest") * (1 - 1e-6)
    zs, fracs = [], []
    for z in np.unique(lab[lab > 0]):
        mask = lab == z
        markers = _markers(m, mask, is_peak)
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
    fracs = refine_positions(np.asarray(density), np.array(zs), np.array(fracs), matrix, grid)
    return Structure(Lattice(matrix), [Element.from_Z(z) for z in zs], fracs)


def refine_positions(density: np.ndarray, z: np.ndarray, frac: np.ndarray, matrix: np.ndarray,
                     grid: PeriodicGrid = PeriodicGrid(), iterations: int = 6) -> np.ndarray:
    """Atom positions (N, 3) fractional that explain the map: each atom moved, all at once, to the quadratic
    vertex of log(map − every other Gaussian, its own other images included) over the 27 voxels around it.
    Where atoms' tails overlap, the peak of the map is not at any atom; what is left after the neighbours are
    taken away is one Gaussian, whose vertex is exact. A few rounds, as the neighbours' positions improve."""
    n = grid.size
    m = np.asarray(density, dtype=np.float64).ravel() * grid.density_scale
    sigma = np.array([width_A(int(k)) for k in z])
    amp = _NORM * np.asarray(z, dtype=np.float64) / sigma**3
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    for _ in range(iterations):
        total = render_periodic(frac, z, matrix, grid)[0].ravel().astype(np.float64) * grid.density_scale
        new = frac.copy()
        for i, (p, s, a) in enumerate(zip(frac, sigma, amp)):
            centre = np.round(p * n - 0.5).astype(int)
            vox = centre + _OFFSETS
            d = (vox + 0.5) / n - p
            c = d @ matrix
            own = a * np.exp(-np.einsum("ij,ij->i", c, c) / (2 * s * s))  # this image only
            flat = np.ravel_multi_index(tuple(np.mod(vox, n).T), (n, n, n))
            rest = m[flat] - total[flat] + own
            if np.any(rest <= 0):
                continue
            v = peak_offset(np.log(rest).reshape(3, 3, 3), max_offset=3.0)
            if v is not None:
                new[i] = np.mod((centre + v + 0.5) / n, 1.0)
        frac = new
    return frac
