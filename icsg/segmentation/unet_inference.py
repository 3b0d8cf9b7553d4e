"""The UNet on density maps: species and occupancy per voxel (with rotation averaging), the calibrated class
probabilities the readings weigh, and the segmentation settings for decoded and true maps."""

from __future__ import annotations

import numpy as np

from icsg.representation.augment import TTA_ROTATIONS, cube_rotations, rotate_map, unrotate_map
from icsg.segmentation.watershed import SegmentationConfig


SPECIES_FROM = ("fit", "unet")


MAPS = ("decoded", "true")
# Species prior weight and position refinement of the 'fit' reading, per kind of map, chosen on perov_5
# training crystals and checked on validation crystals by `python benchmarks/species_reading.py` (RESULTS.md).
# A decoded map's peaks are blurred and shifted, so the matched filter pulls sites off and the heights alone
# confuse elements; on a true map the density is exact and the UNet's probabilities only add its errors.
_FIT_SETTINGS = {"decoded": {"prior_weight": 1.0, "refine_positions": False},
                 "true": {"prior_weight": 0.0, "refine_positions": True}}


def segmentation_for(elements_Z, species_from: str = "fit", maps: str = "decoded") -> SegmentationConfig:
    """Segmentation of maps: UNet occupancy -> watershed sites -> species.

    'fit' (default) reads each site's species from the density profile (eq. 1) and splits
    regions by occupancy only, since the UNet's species map is noisier than its occupancy;
    on ``maps='decoded'`` (what the VAE draws: generation, reconstruction) the fit is
    combined with the UNet's class probabilities around each site (``calibrated_class_probs``
    when the UNet's class weights are passed, as the generator and ``reconstruct`` do) and sites stay at their
    region centroids, on ``maps='true'`` (encoded crystals) the density alone decides and the
    sites move to its matched-filter maxima (``python benchmarks/species_reading.py``).
    'unet' is the paper's majority vote of the UNet species map.
    ``python benchmarks/species_fit.py`` measures the fit alone (true occupancy);
    ``benchmarks/reconstruction.py`` reports the pipeline on decoded and on true maps.
    """
    if species_from not in SPECIES_FROM:
        raise ValueError(f"species_from must be one of {SPECIES_FROM}, got {species_from!r}")
    if maps not in MAPS:
        raise ValueError(f"maps must be one of {MAPS}, got {maps!r}")
    if species_from == "unet":
        return SegmentationConfig()
    return SegmentationConfig(species_from="fit", candidates_Z=tuple(int(z) for z in elements_Z),
                              split_by_species=False, **_FIT_SETTINGS[maps])


def class_to_z(elements_Z: list[int]) -> np.ndarray:
    """Class index -> Z (class 0 -> 0)."""
    return np.array([0] + list(elements_Z), dtype=np.int16)


def segment_maps(unet, density: np.ndarray, elements_Z: list[int], batch_size: int = 16,
                 rotations: int = TTA_ROTATIONS, return_probs: bool = False):
    """UNet on (B, n, n, n) maps -> (Z per voxel, occupancy probability[, species softmax (B, n, n, n, C)]).

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
    if return_probs:
        return species, prob_o / rotations, (prob_s / rotations).astype(np.float32)
    return species, prob_o / rotations


def calibrated_class_probs(probs: np.ndarray, occupancy: np.ndarray, class_weights) -> np.ndarray:
    """p(class) per voxel from the UNet's two heads, with its training class weights divided back out.

    The species head was trained with cross-entropy weighted by w_c ∝ 1 / (voxel frequency of c) and
    background weight 0, so its softmax over-rates rare elements by ~w_c and says nothing about
    background. Bayes: p(c | atom) ∝ p_w(c) / w_c over the elements; p(c) = occ · p(c | atom) and
    p(background) = 1 − occ from the occupancy head.
    """
    w = np.asarray(class_weights, dtype=np.float32)
    inv = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 0.0).astype(np.float32)
    inv[0] = 0.0
    p = np.asarray(probs, dtype=np.float32) * inv  # (B, n, n, n, C): float32 keeps a batch of 32 near 240 MB
    occ = np.clip(np.asarray(occupancy, dtype=np.float32), 0.0, 1.0)[..., None]
    p *= occ / np.clip(p.sum(-1, keepdims=True), 1e-12, None)
    p[..., 0] = 1.0 - occ[..., 0]
    return p
