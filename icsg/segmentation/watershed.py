"""Segmented maps -> atomic sites -> pymatgen Structure.

Regions: connected components of the occupancy mask, optionally first cut along
species-label boundaries (different species never share a region), then split by
a watershed on the Euclidean distance transform with one marker per local maximum
of that transform, so touching spheres of one species separate at their neck
(skimage.segmentation.watershed, skimage.feature.peak_local_max). One site per
region at its weighted centroid; species by majority vote of the voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from icsg.grid import GridSpec
from icsg.segmentation.lattice import lengths_from_coordinates
from icsg.representation.merge import merge_periodic_duplicates


@dataclass(frozen=True)
class SegmentationConfig:
    """Tolerances of the map -> sites step.

    Args:
        split_by_species: cut the occupancy mask at species-label boundaries first.
        watershed: split touching same-species spheres by a distance-transform watershed.
        min_distance_vox: minimum separation (voxels) between watershed markers.
        min_region_vox: regions smaller than this are noise and dropped.
        weighting: 'uniform' (mean voxel index of the region) or 'density'
            (density-weighted, the paper's). Measured on perov_5: density
            weighting pulls a light ion's centroid towards its heavy neighbour's
            Gaussian tail (site EMD 0.08 vs 0.01 Å), so uniform is the default.
        merge_tol_A: sites of one species closer than this under periodic boundary
            conditions are one site seen twice across the box boundary; merged.
        species_from: 'labels' (majority vote of the species map, e.g. the UNet's argmax)
            or 'fit' (``icsg.segmentation.species_fit``: the elements of ``candidates_Z``
            whose eq.-1 Gaussians best reproduce the density; needs the density map).
        candidates_Z: elements the fit may choose from (the models' training elements).
        drop_empty: with 'fit', a region is dropped when the map is explained better without an
            atom there (removes spurious fragments of a noisy occupancy mask).
        refine_positions: with 'fit', move each site to the maximum of the density's matched
            filter near its region centroid, then fit the species again.
        prior_weight: with 'fit' and the segmenter's class probabilities at hand, the fit minimises
            misfit − prior_weight·Σ log p(species) (``species_fit.fit_species``); 0 = density only.
        prior_radius_vox: the class probabilities are averaged within this radius of each site.
    """

    split_by_species: bool = True
    watershed: bool = True
    min_distance_vox: int = 3
    min_region_vox: int = 4
    weighting: str = "uniform"
    merge_tol_A: float = 0.5
    species_from: str = "labels"
    candidates_Z: tuple = ()
    drop_empty: bool = True
    refine_positions: bool = True
    prior_weight: float = 0.0
    prior_radius_vox: float = 1.5

    def __post_init__(self) -> None:
        if self.species_from not in ("labels", "fit"):
            raise ValueError(f"species_from must be 'labels' or 'fit', got {self.species_from!r}")
        if self.species_from == "fit" and not self.candidates_Z:
            raise ValueError("species_from='fit' needs candidates_Z (the elements to choose from)")


def _split_touching(mask: np.ndarray, cfg: SegmentationConfig) -> tuple[np.ndarray, int]:
    labels, n = ndimage.label(mask)
    if not cfg.watershed or n == 0:
        return labels, n
    dist = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=cfg.min_distance_vox, labels=labels, exclude_border=False)
    if len(peaks) <= n:  # nothing to split: one peak (or none) per component
        return labels, n
    markers = np.zeros_like(labels)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components with no peak (tiny) keep a marker of their own
    missing = set(range(1, n + 1)) - set(np.unique(labels[tuple(peaks.T)]).tolist())
    next_id = len(peaks) + 1
    for lab in sorted(missing):
        idx = np.argwhere(labels == lab)[0]
        markers[tuple(idx)] = next_id
        next_id += 1
    ws = watershed(-dist, markers, mask=mask)
    return ws, int(ws.max())


def find_sites(
    species: np.ndarray,
    density: np.ndarray | None = None,
    occupancy: np.ndarray | None = None,
    cfg: SegmentationConfig = SegmentationConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Sites from label maps.

    Args:
        species: (n, n, n) atomic number per voxel (0 = background).
        density: (n, n, n) map for density-weighted centroids.
        occupancy: (n, n, n) mask; defaults to ``species > 0``.

    Returns:
        (Z, centroid voxel indices): int (K,), float (K, 3).
    """
    species = np.asarray(species)
    mask = (species > 0) if occupancy is None else (np.asarray(occupancy) > 0.5)
    weights = np.ones(species.shape) if (cfg.weighting == "uniform" or density is None) else np.clip(density, 0, None)
    zs, cents = [], []
    groups = [(mask & (species == z)) for z in np.unique(species[mask]) if z > 0] if cfg.split_by_species else [mask]
    for group in groups:
        labels, n = _split_touching(group, cfg)
        for lab in range(1, n + 1):
            region = labels == lab
            size = int(region.sum())
            if size < cfg.min_region_vox:
                continue
            vals = species[region]
            vals = vals[vals > 0]
            if vals.size == 0:
                continue
            z = int(np.bincount(vals).argmax())
            w = weights[region]
            idx = np.argwhere(region)
            c = (idx * w[:, None]).sum(0) / w.sum() if w.sum() > 0 else idx.mean(0)
            zs.append(z)
            cents.append(c)
    return np.array(zs, dtype=int), np.array(cents, dtype=float).reshape(-1, 3)


def check_cell_lengths(abc_A: np.ndarray) -> np.ndarray:
    """Decoded cell lengths (Å) as float64; ValueError if any is not finite or below 0.5 Å."""
    abc_A = np.asarray(abc_A, dtype=np.float64)
    if np.any(~np.isfinite(abc_A)) or np.any(abc_A <= 0.5):
        raise ValueError(f"decoded cell lengths {abc_A.tolist()} Å are not physical")
    return abc_A


def sites_to_structure(
    z: np.ndarray,
    centroids_vox: np.ndarray,
    abc_A: np.ndarray,
    spec: GridSpec = GridSpec(),
    merge_tol_A: float = 0.5,
) -> Structure:
    """Place sites (voxel indices) in an orthogonal cell and merge boundary duplicates."""
    abc_A = check_cell_lengths(abc_A)
    lattice = Lattice.orthorhombic(*abc_A)
    if len(z) == 0:
        raise ValueError("no atomic sites found in the segmented map")
    xyz = spec.index_to_cartesian(centroids_vox, abc_A)
    frac = np.mod(xyz / abc_A, 1.0)
    s = Structure(lattice, [Element.from_Z(int(k)) for k in z], frac)
    if merge_tol_A > 0 and len(s) > 1:
        s = merge_periodic_duplicates(s, merge_tol_A)
    return s


def decode_structure(
    species: np.ndarray,
    coords: np.ndarray,
    density: np.ndarray | None = None,
    occupancy: np.ndarray | None = None,
    spec: GridSpec = GridSpec(),
    cfg: SegmentationConfig = SegmentationConfig(),
) -> Structure:
    """(S, C[, M, S_B]) -> Structure: lattice from C, sites from the segmented map."""
    abc = lengths_from_coordinates(coords, spec)
    z, cents = find_sites(species, density, occupancy, cfg)
    z, cents = assign_species(z, cents, density, abc, spec, cfg)
    return sites_to_structure(z, cents, abc, spec, cfg.merge_tol_A)


def assign_species(z: np.ndarray, centroids_vox: np.ndarray, density: np.ndarray | None, abc_A: np.ndarray,
                   spec: GridSpec, cfg: SegmentationConfig, class_probs: np.ndarray | None = None,
                   classes_Z=None) -> tuple[np.ndarray, np.ndarray]:
    """(Z, centroids): the label vote, or (``cfg.species_from == 'fit'``) the eq.-1 profile fit started
    from it, without the regions the fit leaves empty (``cfg.drop_empty``). ``class_probs`` (n, n, n, C),
    the segmenter's softmax over ``classes_Z`` (0 = background), weighs in with ``cfg.prior_weight``."""
    if cfg.species_from != "fit" or len(z) == 0:
        return z, centroids_vox
    if density is None:
        raise ValueError("species_from='fit' needs the density map")
    from icsg.segmentation.species_fit import fit_species, refine_positions, site_class_log_probs

    use_prior = class_probs is not None and cfg.prior_weight > 0
    if use_prior and classes_Z is None:
        raise ValueError("class_probs needs classes_Z (the element of each class, 0 = background)")

    def fit(cents, init):
        prior = site_class_log_probs(class_probs, cents, cfg.prior_radius_vox) if use_prior else None
        return fit_species(density, cents, abc_A, cfg.candidates_Z, spec, init_Z=init, allow_empty=cfg.drop_empty,
                           log_prior=prior, prior_classes_Z=classes_Z, prior_weight=cfg.prior_weight)

    cents = np.asarray(centroids_vox, dtype=np.float64)
    zf = fit(cents, z)
    keep = zf > 0
    zf, cents = zf[keep], cents[keep]
    if cfg.refine_positions and len(zf):
        # sites from the density's matched filter, then the species again at the better positions
        cents = refine_positions(density, cents, abc_A, zf, spec)
        zf = fit(cents, zf)
        keep = zf > 0
        zf, cents = zf[keep], cents[keep]
    return zf, cents
