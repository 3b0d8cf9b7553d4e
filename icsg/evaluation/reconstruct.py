"""Reconstruction through the trained networks, compared with the input.

``reconstruct_codes`` is what ``icsg reconstruct`` and ``benchmarks/reconstruction.py`` run: crystal -> code
[z_map, z_read] -> decoded map -> the fast (or exact) reading of ``icsg.generation.codec`` -> Structure.

``reconstruct`` is the diagnostic pass over the VAE and UNet alone (the ablation benchmark uses it):
crystal -> [M, C] -> VAE (posterior mean) -> M', C' -> UNet -> segmentation -> Structure.

Also reports ``vae_mse`` (mean squared error of the decoded 4 channels, normalised
units), ``unet_nonzero_recall`` (UNet on the true M against the true S: the
segmenter's own quality, the paper's 87 %; ``unet_recall_by_element`` splits it by element) and
``unet_nonzero_recall_decoded``
(UNet on the decoded M'), ``vae_density_mse`` (density channel only) next to
``mean_map_density_mse`` (the error of answering every crystal with the average map of
the evaluated set: a VAE above it has learned nothing crystal-specific), and ``true_maps``:
the round-trip metrics of the UNet + segmentation on the true M (no VAE), which separates
the VAE's error from the segmenter's; and ``decoded_true_occupancy``: the decoded M' and C'
segmented with the encoder's own occupancy mask S_B instead of the UNet's, i.e. what the
decoded density alone supports (sites, species, cell) when the regions are right (segmentation only,
never refined: it measures the segmentation).

With ``refine`` (default) the decoded crystals are read as in generation: segmentation, then the
round-trip refinement towards the crystal whose code is closest to the posterior mean the map was
decoded from (``icsg.generation.consistency``; it sees that code and the decoded maps, never the input
crystal). ``segmentation_only`` then reports the same crystals before the refinement, and
``latent_residual`` the mean squared code distance left. With ``cell`` (a ``LatentCell``; the CLI's
default ``--cell-from latent``) every decoded reading takes its cell lengths from the posterior mean
instead of the decoded coordinate channels (``icsg.generation.latent_cell``).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import asdict, replace

import numpy as np

from icsg.data.dataset import condition_onehot
from icsg.data.filters import FilterConfig, standardise
from icsg.data.sources import Record
from icsg.errors import CrystalError
from icsg.metrics import compare, summarise
from icsg.generation.search_config import ConsistencyConfig
from icsg.generation.latent_cell import LatentCell
from icsg.generation.pipeline import (DecodedBatch, batch_to_sites, batch_to_structures, exact_fits, refined,
                                      restarted, segmented_batch, structures_from_sites, with_calibrated_probs)
from icsg.grid import GridSpec
from icsg.segmentation.unet_inference import segment_maps, segmentation_for
from icsg.representation.augment import TTA_ROTATIONS
from icsg.representation.density import encode


def accept(records: list[Record]) -> tuple[list[tuple], list[dict]]:
    """([(record, standardised Structure)], [failure with id, reason, detail]): what the filters let through."""
    accepted, failures = [], []
    for r in records:
        if r.error is not None:
            failures.append({"id": r.id, "reason": r.error.reason, "detail": r.error.detail})
            continue
        try:
            accepted.append((r, standardise(r.structure, r.id, FilterConfig())))
        except CrystalError as err:
            failures.append({"id": r.id, "reason": err.reason, "detail": err.detail})
    return accepted, failures


def _recall(pred_z: np.ndarray, true_z: np.ndarray) -> tuple[int, int]:
    nz = true_z > 0
    return int(np.sum(pred_z[nz] == true_z[nz])), int(nz.sum())


def _confusion(pred_z: np.ndarray, true_z: np.ndarray, counts: Counter) -> None:
    """Adds the (true Z, predicted Z) pairs of the atom voxels to ``counts``."""
    nz = true_z > 0
    pairs, n = np.unique(np.stack([true_z[nz], pred_z[nz]]).astype(np.int64), axis=1, return_counts=True)
    for (zt, zp), k in zip(pairs.T.tolist(), n.tolist()):
        counts[(zt, zp)] += k


def recall_by_element(counts: Counter) -> dict:
    """Per element of the true map: its share of atom voxels, the UNet's recall on them, and the element its
    voxels are most often read as instead (why the overall recall misses: neighbouring cations)."""
    from pymatgen.core import Element

    total = sum(counts.values())
    out = {}
    for zt in sorted({zt for zt, _ in counts}):
        row = {zp: k for (t, zp), k in counts.items() if t == zt}
        n = sum(row.values())
        wrong = {zp: k for zp, k in row.items() if zp != zt}
        worst = max(wrong, key=wrong.get) if wrong else None
        out[Element.from_Z(zt).symbol] = {
            "voxel_share": n / total, "recall": row.get(zt, 0) / n,
            "read_as": None if worst is None else ("background" if worst == 0 else Element.from_Z(worst).symbol),
            "read_as_share": 0.0 if worst is None else wrong[worst] / n}
    return out


def _search(vae, sites, chunk, dec, mu, cond, spec, seg, refine, log):
    """The search reading of one chunk, each stage's structures scored into ``log`` (segmentation only, first
    reading before a restart, before the exact fit) so the record shows what each stage adds."""
    def scored(items):
        return [compare(s, pred) for (_, s, _), (pred, _) in zip(chunk, structures_from_sites(items, spec, seg))
                if pred is not None]

    if refine is None:
        return refined(vae, sites, dec, mu, cond, spec, seg, None)
    log["pairs_seg"] += scored(sites)
    if refine.restart_above is not None:
        start = copy.deepcopy(sites)
        sites = refined(vae, sites, dec, mu, cond, spec, seg, replace(refine, restart_above=None, exact_fit_steps=0))
        log["pairs_first"] += scored(sites)
        first = [st for st, _ in sites]
        sites = restarted(vae, sites, start, dec, mu, cond, spec, seg, refine)
        log["restarted"] += sum(f is not None and f.residual > refine.restart_above for f in first)
        log["second_kept"] += sum(f is not st for f, (st, _) in zip(first, sites))
    else:
        sites = refined(vae, sites, dec, mu, cond, spec, seg, replace(refine, exact_fit_steps=0))
    if refine.exact_fit_steps > 0:
        log["pairs_before_exact"] += scored(sites)
        sites = exact_fits(vae, sites, dec, mu, cond, spec, refine, counts=log["exact_counts"])
    return sites


def _search_summary(refine, log, residuals, n) -> dict:
    if refine is None:
        return {}
    keys = ("match_rate", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy")
    part = lambda pairs: {k: v for k, v in summarise(pairs, [], n).items() if k in keys}  # noqa: E731
    out = {"segmentation_only": part(log["pairs_seg"]),
           "latent_residual": float(np.mean(residuals)) if residuals else float("nan")}
    if refine.restart_above is not None:
        out["without_restart"] = part(log["pairs_first"])
        out["restarted"] = {"crystals": log["restarted"], "second_reading_kept": log["second_kept"]}
    if refine.exact_fit_steps > 0:
        out["without_exact_fit"] = part(log["pairs_before_exact"])
        out["exact_fit"] = log["exact_counts"]
    return out


def _on_true_maps(unet, unet_meta, x, chunk, spec, seg_true, batch_size, rotations, workers, confusion,
                  pairs_true, fails_true) -> tuple[int, int]:
    """What the UNet + segmentation alone reach on the true maps (read by the density alone, no class prior):
    appends to ``pairs_true`` / ``fails_true`` and ``confusion``; returns (non-zero hits, non-zero voxels)."""
    true_s = np.stack([e.species for _, _, e in chunk])
    species_t, occ_t = segment_maps(unet, x[..., 0], unet_meta["elements_Z"], batch_size, rotations)
    on_true = DecodedBatch(x[..., 0], x[..., 1:], species_t, occ_t)
    _confusion(species_t, true_s, confusion)
    for (r, s, _), (pred, why) in zip(chunk, batch_to_structures(on_true, spec, seg_true, workers=workers)):
        if pred is not None:
            pairs_true.append(compare(s, pred))
        else:
            fails_true.append({"id": r.id, "reason": "decode_failed", "detail": why})
    return _recall(species_t, true_s)


def _with_true_occupancy(raw, class_weights, chunk, spec, seg, workers, pairs_occ, fails_occ) -> None:
    """The true regions, but species as the pipeline reads them from the decoded map (never the true labels);
    the true mask also stands in for the UNet's occupancy in the "no atom" probability."""
    true_occ = np.stack([e.occupancy for _, _, e in chunk]).astype(np.float32)
    with_true_occ = with_calibrated_probs(replace(raw, occupancy=true_occ), class_weights)
    for (r, s, _), (pred, why) in zip(chunk, batch_to_structures(with_true_occ, spec, seg, workers=workers)):
        if pred is not None:
            pairs_occ.append(compare(s, pred))
        else:
            fails_occ.append({"id": r.id, "reason": "decode_failed", "detail": why})


def _map_errors(sq_err, dens_err, dens_sum, dens_sq) -> dict:
    """The VAE's map MSE (all channels, density) and the MSE of predicting every map by the mean map."""
    k = len(dens_err)
    return {"vae_mse": float(np.mean(sq_err)) if sq_err else float("nan"),
            "vae_density_mse": float(np.mean(dens_err)) if dens_err else float("nan"),
            "mean_map_density_mse": float(np.mean(dens_sq / k - (dens_sum / k) ** 2)) if k else float("nan")}


def reconstruct(records: list[Record], vae, vae_meta: dict, unet, unet_meta: dict, batch_size: int = 16,
                workers: int = 1, progress: bool = True, species_from: str = "fit",
                rotations: int = TTA_ROTATIONS, refine: ConsistencyConfig | None = ConsistencyConfig(),
                cell: LatentCell | None = None) -> dict:
    from tqdm.auto import tqdm

    spec = GridSpec.from_dict(vae_meta["grid"])
    seg = segmentation_for(unet_meta["elements_Z"], species_from, maps="decoded")
    seg_true = segmentation_for(unet_meta["elements_Z"], species_from, maps="true")
    cond_info = vae_meta["condition"]
    prop = cond_info["property"]
    t0 = time.perf_counter()
    crystals = []
    accepted, failures = accept(records)
    accepted = [(r, s, encode(s, spec, item=r.id)) for r, s in accepted]
    pairs, sq_err, hits, total, hits_d, total_d = [], [], 0, 0, 0, 0
    dens_err, dens_sum, dens_sq = [], 0.0, 0.0
    confusion: Counter = Counter()
    pairs_true, fails_true, pairs_occ, fails_occ, residuals = [], [], [], [], []
    log = {"pairs_seg": [], "pairs_first": [], "restarted": 0, "second_kept": 0, "pairs_before_exact": [],
           "exact_counts": {}}
    bar = tqdm(total=len(accepted), desc="reconstruct", disable=not progress, unit="crystal")
    for i in range(0, len(accepted), batch_size):
        chunk = accepted[i:i + batch_size]
        x = np.stack([np.concatenate([e.density[..., None], e.coords], -1) for _, _, e in chunk]).astype(np.float32)
        cond = condition_onehot([r.properties.get(prop, np.nan) for r, _, _ in chunk], cond_info)
        mu, _ = vae.encoder.predict([x, cond], verbose=0)
        recon = np.asarray(vae.decoder.predict([mu, cond], verbose=0))
        sq_err.extend(np.mean((recon - x) ** 2, axis=(1, 2, 3, 4)).tolist())
        dens_err.extend(np.mean((recon[..., 0] - x[..., 0]) ** 2, axis=(1, 2, 3)).tolist())
        dens_sum = dens_sum + x[..., 0].astype(np.float64).sum(0)
        dens_sq = dens_sq + (x[..., 0].astype(np.float64) ** 2).sum(0)
        true_s = np.stack([e.species for _, _, e in chunk])
        h, t = _on_true_maps(unet, unet_meta, x, chunk, spec, seg_true, batch_size, rotations, workers, confusion,
                             pairs_true, fails_true)
        hits, total = hits + h, total + t
        raw = segmented_batch(unet, recon[..., 0], recon[..., 1:], unet_meta["elements_Z"], batch_size, rotations)
        cw = unet_meta.get("class_weights")
        if cell is not None:  # the cell read from the code (icsg.generation.latent_cell), not the coordinates
            raw = replace(raw, cell_A=cell.predict(mu, cond))
        dec = with_calibrated_probs(raw, cw)
        _with_true_occupancy(raw, cw, chunk, spec, seg, workers, pairs_occ, fails_occ)
        h, t = _recall(dec.species, true_s)
        hits_d, total_d = hits_d + h, total_d + t
        sites = _search(vae, batch_to_sites(dec, spec, seg, workers=workers), chunk, dec, mu, cond, spec, seg, refine, log)
        residuals += [st.residual for st, _ in sites if st is not None]
        for (r, s, _), (pred, why), (st, _) in zip(chunk, structures_from_sites(sites, spec, seg), sites):
            if pred is None:
                failures.append({"id": r.id, "reason": "decode_failed", "detail": why})
            else:
                pairs.append(compare(s, pred))
                # which crystals missed, and how far their reading ended from its code (NaN unrefined)
                crystals.append({"id": r.id, "formula": s.composition.formula, "read": pred.composition.formula,
                                 "match": bool(pairs[-1].match), "dn_sites": float(pairs[-1].dn_sites),
                                 "code_distance": float(st.residual) if st is not None else float("nan")})
        bar.update(len(chunk))
    bar.close()
    out = summarise(pairs, failures, len(records))
    out.update(_map_errors(sq_err, dens_err, dens_sum, dens_sq))
    out["unet_nonzero_recall"] = hits / total if total else float("nan")
    out["unet_nonzero_recall_decoded"] = hits_d / total_d if total_d else float("nan")
    out["unet_recall_by_element"] = recall_by_element(confusion)
    out["species_from"] = species_from
    out["tta_rotations"] = rotations
    true = summarise(pairs_true, fails_true, len(accepted))
    keys = ("match_rate", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy")
    out["true_maps"] = {k: true[k] for k in keys}
    with_occ = summarise(pairs_occ, fails_occ, len(accepted))
    out["decoded_true_occupancy"] = {k: with_occ[k] for k in keys}
    out["refine"] = None if refine is None else asdict(refine)
    out["cell_from"] = "coords" if cell is None else "latent"
    out["crystals"] = crystals
    out.update(_search_summary(refine, log, residuals, len(accepted)))
    out["seconds"] = time.perf_counter() - t0
    out["seconds_per_crystal"] = out["seconds"] / max(1, len(accepted))
    return out


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reconstruct_codes(records: list[Record], codec, reading: str = "fast", exact: ConsistencyConfig | None = None,
                      progress: bool = True) -> dict:
    """Crystal -> code (posterior means) -> crystal through ``codec`` (``icsg.generation.codec.DensityCodec``),
    compared with the input: match rate, cell MAE (Å), site EMD (Å), |Δn|, species accuracy; the readout
    heads' composition accuracy (every element count right) and cell MAE; time and peak memory.

    ``reading``: 'fast' (the heads' composition on the segmented sites) or 'exact' (the per-crystal search,
    ``exact`` its settings). Crystals are encoded and decoded in batches of ``codec.batch_size``."""
    from tqdm.auto import tqdm

    cond_info = codec.condition
    prop = cond_info["property"]
    t0 = time.perf_counter()
    crystals, pairs = [], []
    accepted, failures = accept(records)
    comp_right, head_cell_err = [], []
    els = codec.readout_cfg.elements_Z
    bar = tqdm(total=len(accepted), desc=f"reconstruct ({reading})", disable=not progress, unit="crystal")
    step = codec.batch_size * 4
    for i in range(0, len(accepted), step):
        chunk = accepted[i:i + step]
        cond = condition_onehot([r.properties.get(prop, np.nan) for r, _ in chunk], cond_info)
        z = codec.encode([s for _, s in chunk], cond, [r.id for r, _ in chunk])
        counts, _, cell, _ = codec.heads(codec.split(z)[1])
        true_counts = np.array([[sum(sp.Z == z for sp in s.species) for z in els] for _, s in chunk])
        comp_right += np.all(counts == true_counts, axis=1).tolist()
        head_cell_err += np.abs(cell - np.stack([s.lattice.abc for _, s in chunk])).mean(1).tolist()
        out = codec.decode(z, cond, reading=reading, exact=exact)
        for (r, s), pred, why in zip(chunk, out.structures, out.reasons):
            if pred is None:
                failures.append({"id": r.id, "reason": "decode_failed", "detail": why})
                crystals.append({"id": r.id, "formula": s.composition.formula, "read": None, "match": False})
                continue
            pairs.append(compare(s, pred))
            crystals.append({"id": r.id, "formula": s.composition.formula, "read": pred.composition.formula,
                             "match": bool(pairs[-1].match), "dn_sites": float(pairs[-1].dn_sites)})
        bar.update(len(chunk))
    bar.close()
    res = summarise(pairs, failures, len(records))
    res["reading"] = reading
    res["readout_composition_accuracy"] = float(np.mean(comp_right)) if comp_right else float("nan")
    res["readout_cell_mae_A"] = float(np.mean(head_cell_err)) if head_cell_err else float("nan")
    res["crystals"] = crystals
    res["seconds"] = time.perf_counter() - t0
    res["crystals_per_second"] = len(accepted) / max(res["seconds"], 1e-9)
    res["peak_rss_gb"] = _peak_rss_gb()
    return res
