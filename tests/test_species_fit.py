"""Species from the density profile (eq. 1 read backwards)."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from icsg.metrics import compare
from icsg.segmentation.unet_inference import segmentation_for
from icsg.grid import GridSpec
from icsg.representation.density import encode
from icsg.segmentation.species_fit import fit_species
from icsg.segmentation.watershed import SegmentationConfig, decode_structure, find_sites

# the perov_5 element set is larger; a dozen plausible ions make the test meaningful and fast
CANDIDATES = (3, 7, 8, 9, 11, 19, 22, 38, 41, 56, 57, 73, 74, 79, 81)


def test_fit_recovers_species_ignoring_labels(perovskite):
    spec = GridSpec()
    e = encode(perovskite, spec)
    z_true, cents = find_sites(e.species, e.density)
    wrong = np.full_like(z_true, 3)  # every site labelled Li: the fit must not trust the labels
    z = fit_species(e.density, cents, e.abc_A, CANDIDATES, spec, init_Z=wrong)
    assert z.tolist() == z_true.tolist()


def test_pair_moves_escape_the_la_tl_li_trap():
    # LaAuO3: single-site descent from a greedy start ended at Tl on the A site and Li on the faces
    s = Structure(Lattice.cubic(4.2), ["La", "Au", "O", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    spec = GridSpec()
    e = encode(s, spec)
    z_true, cents = find_sites(e.species, e.density)
    assert fit_species(e.density, cents, e.abc_A, CANDIDATES, spec).tolist() == z_true.tolist()


def test_decode_with_fit_and_occupancy_only(perovskite):
    spec = GridSpec()
    e = encode(perovskite, spec)
    blank = (e.species > 0).astype(np.int16) * 3  # species map carries no information
    cfg = segmentation_for(CANDIDATES, "fit", maps="true")
    s = decode_structure(blank, e.coords, e.density, e.occupancy, spec, cfg)
    assert compare(perovskite, s).match


def test_fit_config_validation():
    with pytest.raises(ValueError, match="candidates_Z"):
        SegmentationConfig(species_from="fit")
    with pytest.raises(ValueError, match="species_from"):
        segmentation_for(CANDIDATES, "vote")


def test_refine_positions_recovers_sites_from_biased_centroids(perovskite):
    from icsg.segmentation.species_fit import refine_positions

    spec = GridSpec()
    e = encode(perovskite, spec)
    z, cents = find_sites(e.species, e.density)
    noisy = cents + np.random.default_rng(0).normal(0, 0.7, cents.shape)  # ~0.13 Å off, like a UNet region
    fixed = refine_positions(e.density, noisy, e.abc_A, z, spec)
    assert np.abs(noisy - cents).max() > 1.0
    assert np.abs(fixed - cents).max() < 0.35  # voxels (0.06 Å)


def test_class_prior_weighs_in_and_is_off_at_zero(perovskite):
    from icsg.generation.pipeline import DecodedBatch, batch_to_structures
    from icsg.segmentation.species_fit import site_class_log_probs

    spec = GridSpec()
    e = encode(perovskite, spec)
    z_true, cents = find_sites(e.species, e.density)
    classes = np.array((0,) + CANDIDATES)
    # a segmenter sure that every site is Ba (56)
    probs = np.full(e.density.shape + (len(classes),), 0.01 / (len(classes) - 1), dtype=np.float32)
    probs[..., list(classes).index(56)] = 0.99
    lp = site_class_log_probs(probs, cents)
    assert lp.shape == (len(cents), len(classes))
    assert np.allclose(lp[:, list(classes).index(56)], np.log(0.99), atol=1e-6)
    fit = dict(log_prior=lp, prior_classes_Z=classes)
    assert fit_species(e.density, cents, e.abc_A, CANDIDATES, spec, prior_weight=0.0, **fit).tolist() \
        == z_true.tolist()
    assert set(fit_species(e.density, cents, e.abc_A, CANDIDATES, spec, prior_weight=1e6, **fit).tolist()) == {56}
    with pytest.raises(ValueError, match="log_prior has shape"):
        fit_species(e.density, cents, e.abc_A, CANDIDATES, spec, prior_weight=1.0, log_prior=lp[:, :3],
                    prior_classes_Z=classes)
    # through the batch pipeline: the decoded-map settings read the prior, the true-map settings do not
    batch = DecodedBatch(e.density[None], e.coords[None], e.species[None], e.occupancy[None].astype(np.float32),
                         probs[None], classes)
    (on_true, _), = batch_to_structures(batch, spec, segmentation_for(CANDIDATES, "fit", maps="true"))
    assert compare(perovskite, on_true).match
    strong = SegmentationConfig(**{**segmentation_for(CANDIDATES, "fit").__dict__, "prior_weight": 1e6})
    (swayed, _), = batch_to_structures(batch, spec, strong)
    assert {str(sp) for sp in swayed.species} == {"Ba"}
    with pytest.raises(ValueError, match="maps must be"):
        segmentation_for(CANDIDATES, "fit", maps="noisy")


def test_calibrated_class_probs_divide_out_the_training_weights():
    from icsg.segmentation.unet_inference import calibrated_class_probs

    probs = np.array([[0.1, 0.45, 0.45, 0.0]], dtype=np.float32)  # background, A, B, an element never seen
    occ = np.array([0.8], dtype=np.float32)
    p = calibrated_class_probs(probs, occ, [0.0, 1.0, 3.0, 0.0])
    assert np.allclose(p, [[0.2, 0.6, 0.2, 0.0]], atol=1e-6)  # B was weighted 3x in training: a third as likely
    assert np.allclose(p.sum(-1), 1.0, atol=1e-6)
