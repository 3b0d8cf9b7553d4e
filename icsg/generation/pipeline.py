"""Maps -> crystals with the trained networks: VAE decoder -> UNet -> segmentation -> Structure.

Batched: the decoder and the UNet run on whole batches; segmentation runs per map
(optionally over worker processes). A map that does not segment into a crystal
comes back as ``None`` with the reason, never as an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import icsg  # noqa: F401
from icsg.grid import GridSpec
from icsg.representation.augment import TTA_ROTATIONS, cube_rotations, rotate_map, unrotate_map
from icsg.parallel import pmap
from icsg.segmentation.lattice import lengths_from_coordinates
from icsg.segmentation.watershed import SegmentationConfig, assign_species, find_sites, sites_to_structure


@dataclass
class DecodedBatch:
    density: np.ndarray   # (B, n, n, n) decoded M' (normalised)
    coords: np.ndarray    # (B, n, n, n, 3) decoded C'
    species: np.ndarray   # (B, n, n, n) Z per voxel from the UNet argmax
    occupancy: np.ndarray  # (B, n, n, n) UNet occupancy probability


SPECIES_FROM = ("fit", "unet")


def segmentation_for(elements_Z, species_from: str = "fit") -> SegmentationConfig:
    """Segmentation of decoded maps: UNet occupancy -> watershed sites -> species.

    'fit' (default) reads each site's species from the density profile (eq. 1, exact on
    true perov_5 maps) and splits regions by occupancy only, since the UNet's species
    map is noisier than its occupancy; 'unet' is the paper's majority vote of the UNet
    species map. ``python benchmarks/species_fit.py`` measures the fit alone (true occupancy);
    ``benchmarks/reconstruction.py`` reports it behind the shipped UNet on true maps.
    """
    if species_from not in SPECIES_FROM:
        raise ValueError(f"species_from must be one of {SPECIES_FROM}, got {species_from!r}")
    if species_from == "unet":
        return SegmentationConfig()
    return SegmentationConfig(species_from="fit", candidates_Z=tuple(int(z) for z in elements_Z),
                              split_by_species=False)


def class_to_z(elements_Z: list[int]) -> np.ndarray:
    """Class index -> Z (class 0 -> 0)."""
    return np.array([0] + list(elements_Z), dtype=np.int16)


def segment_maps(unet, density: np.ndarray, elements_Z: list[int], batch_size: int = 16,
                 rotations: int = TTA_ROTATIONS):
    """UNet on (B, n, n, n) maps -> (Z per voxel, occupancy probability).

    With ``rotations`` > 1 the UNet sees each map in that many of the 24 exact cube
    rotations (identity first) and its species and occupancy probabilities are rotated
    back and averaged (test-time augmentation). A crystal's labels are equivariant
    under these rotations, the UNet's errors are not; on 200 true perov_5 validation maps
    4 rotations raised the UNet + segmentation match from 0.64 to 0.75 and cut the site EMD
    from 0.144 to 0.092 Å at 4x the UNet's cost (``python benchmarks/tta.py``, RESULTS.md).
    """
    if not 1 <= rotations <= 24:
        raise ValueError(f"rotations must be between 1 and 24, got {rotations}")
    table = class_to_z(elements_Z)
    prob_s, prob_o = 0.0, 0.0
    for rot in cube_rotations()[:rotations]:
        x = np.stack([rotate_map(m, rot) for m in np.asarray(density)])[..., None].astype(np.float32)
        out = unet.predict(x, batch_size=batch_size, verbose=0)
        prob_s = prob_s + np.stack([unrotate_map(v, rot) for v in np.asarray(out["species"])])
        prob_o = prob_o + np.stack([unrotate_map(v[..., 0], rot) for v in np.asarray(out["occupancy"])])
    species = table[np.argmax(prob_s, axis=-1)]
    return species, prob_o / rotations


def decode_latents(vae, unet, z: np.ndarray, cond: np.ndarray, elements_Z: list[int],
                   batch_size: int = 16, rotations: int = TTA_ROTATIONS) -> DecodedBatch:
    """Latent vectors (B, latent) + one-hot conditions (B, K) -> decoded maps and segmentations."""
    x = np.asarray(vae.decoder.predict([z.astype(np.float32), cond.astype(np.float32)],
                                       batch_size=batch_size, verbose=0))
    species, occ = segment_maps(unet, x[..., 0], elements_Z, batch_size, rotations)
    return DecodedBatch(x[..., 0], x[..., 1:], species, occ)


def _to_structure(args):
    species, occ, dens, coords, spec, seg = args
    try:
        abc = lengths_from_coordinates(coords, spec)
        z, cents = find_sites(species, dens, occ, seg)
        z, cents = assign_species(z, cents, dens, abc, spec, seg)
        return sites_to_structure(z, cents, abc, spec, seg.merge_tol_A), None
    except ValueError as exc:
        return None, str(exc)


def batch_to_structures(b: DecodedBatch, spec: GridSpec, seg: SegmentationConfig = SegmentationConfig(),
                        workers: int = 1, progress: bool = False) -> list[tuple]:
    """[(Structure or None, failure reason or None)] for every map of the batch."""
    items = [(b.species[i], b.occupancy[i], b.density[i], b.coords[i], spec, seg) for i in range(len(b.density))]
    return list(pmap(_to_structure, items, workers=workers, total=len(items), progress=progress,
                     desc="segmenting", chunksize=4))
