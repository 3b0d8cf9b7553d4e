"""Maps -> crystals with the trained networks: VAE decoder -> UNet -> segmentation -> Structure.

Batched: the decoder and the UNet run on whole batches; segmentation runs per map
(optionally over worker processes). A map that does not segment into a crystal
comes back as ``None`` with the reason, never as an exception.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

import icsg  # noqa: F401
from icsg.generation.consistency import Sites, refine_sites, site_elements, spare_positions
from icsg.generation.search_config import ConsistencyConfig
from icsg.generation.latent_cell import LatentCell
from icsg.grid import GridSpec
from icsg.parallel import pmap
from icsg.segmentation.lattice import lengths_from_coordinates
from icsg.representation.augment import TTA_ROTATIONS
from icsg.segmentation.unet_inference import calibrated_class_probs, class_to_z, segment_maps
from icsg.segmentation.watershed import (SegmentationConfig, assign_species, check_cell_lengths, find_sites,
                                          sites_to_structure)


@dataclass
class DecodedBatch:
    density: np.ndarray   # (B, n, n, n) decoded M' (normalised)
    coords: np.ndarray    # (B, n, n, n, 3) decoded C'
    species: np.ndarray   # (B, n, n, n) Z per voxel from the UNet argmax
    occupancy: np.ndarray  # (B, n, n, n) UNet occupancy probability
    class_probs: np.ndarray | None = None  # (B, n, n, n, C) UNet species softmax, for the species prior
    classes_Z: np.ndarray | None = None    # (C,) Z of each class (0 = background)
    cell_A: np.ndarray | None = None       # (B, 3) cell lengths (Å) read from the latent vectors; None: from coords


def with_calibrated_probs(batch: DecodedBatch, class_weights) -> DecodedBatch:
    """The batch with ``calibrated_class_probs`` of its UNet softmax and occupancy (unchanged without weights)."""
    if class_weights is None or batch.class_probs is None:
        return batch
    return replace(batch, class_probs=calibrated_class_probs(batch.class_probs, batch.occupancy, class_weights))


def segmented_batch(unet, density: np.ndarray, coords: np.ndarray, elements_Z: list[int], batch_size: int = 16,
                    rotations: int = TTA_ROTATIONS, class_weights=None) -> DecodedBatch:
    """Maps and coordinate channels with the UNet's labels, occupancy and class probabilities
    (``calibrated_class_probs`` when the UNet's training ``class_weights`` are given)."""
    species, occ, probs = segment_maps(unet, density, elements_Z, batch_size, rotations, return_probs=True)
    batch = DecodedBatch(np.asarray(density), np.asarray(coords), species, occ, probs, class_to_z(elements_Z))
    return with_calibrated_probs(batch, class_weights)


def decode_latents(vae, unet, z: np.ndarray, cond: np.ndarray, elements_Z: list[int],
                   batch_size: int = 16, rotations: int = TTA_ROTATIONS, class_weights=None,
                   cell: LatentCell | None = None) -> DecodedBatch:
    """Latent vectors (B, latent) + one-hot conditions (B, K) -> decoded maps and segmentations; the cell
    lengths from ``cell`` (``icsg.generation.latent_cell``) when given, else from the decoded coordinates."""
    x = np.asarray(vae.decoder.predict([z.astype(np.float32), cond.astype(np.float32)],
                                       batch_size=batch_size, verbose=0))
    b = segmented_batch(unet, x[..., 0], x[..., 1:], elements_Z, batch_size, rotations, class_weights)
    return b if cell is None else replace(b, cell_A=cell.predict(z, cond))


def _to_sites(args):
    species, occ, dens, coords, spec, seg, probs, classes_Z, cell = args
    try:
        abc = check_cell_lengths(lengths_from_coordinates(coords, spec) if cell is None else cell)
        z, cents = find_sites(species, dens, occ, seg)
        z, cents = assign_species(z, cents, dens, abc, spec, seg, probs, classes_Z)
        if len(z) == 0:
            raise ValueError("no atomic sites found in the segmented map")
        return Sites(abc, np.asarray(z, dtype=np.int64), cents), None
    except ValueError as exc:
        return None, str(exc)


def batch_to_sites(b: DecodedBatch, spec: GridSpec, seg: SegmentationConfig = SegmentationConfig(),
                   workers: int = 1, progress: bool = False) -> list[tuple]:
    """[(Sites or None, failure reason or None)] for every map of the batch: cell, elements and sites
    before they become a Structure (``icsg.generation.consistency.refine_sites`` works on these)."""
    items = [(b.species[i], b.occupancy[i], b.density[i], b.coords[i], spec, seg,
              None if b.class_probs is None else b.class_probs[i], b.classes_Z,
              None if b.cell_A is None else b.cell_A[i]) for i in range(len(b.density))]
    return list(pmap(_to_sites, items, workers=workers, total=len(items), progress=progress,
                     desc="segmenting", chunksize=4))


def structures_from_sites(items: list[tuple], spec: GridSpec, seg: SegmentationConfig = SegmentationConfig()
                          ) -> list[tuple]:
    """[(Sites or None, reason)] -> [(Structure or None, reason)]; boundary duplicates merged."""
    out = []
    for s, why in items:
        if s is None:
            out.append((None, why))
            continue
        try:
            out.append((sites_to_structure(s.z, s.centroids_vox, s.abc_A, spec, seg.merge_tol_A), None))
        except ValueError as exc:
            out.append((None, str(exc)))
    return out


def _with_candidates(items: list[tuple], b: DecodedBatch, spec: GridSpec, seg: SegmentationConfig) -> None:
    """Each site's class log-probabilities (the elements the search tries) and the spare positions with theirs."""
    from icsg.segmentation.species_fit import site_class_log_probs

    for i, (s, _) in enumerate(items):
        if s is None:
            continue
        s.log_probs = site_class_log_probs(b.class_probs[i], s.centroids_vox, seg.prior_radius_vox)
        s.spare_vox = spare_positions(b.density[i], s.z, s.centroids_vox, s.abc_A, spec)
        s.spare_log_probs = site_class_log_probs(b.class_probs[i], s.spare_vox, seg.prior_radius_vox)


def refined(vae, items: list[tuple], b: DecodedBatch, latents: np.ndarray, cond: np.ndarray, spec: GridSpec,
            seg: SegmentationConfig, cfg: ConsistencyConfig | None) -> list[tuple]:
    """``batch_to_sites(b, ...)`` output moved towards round-trip consistency with the latent vectors the maps
    were decoded from (``icsg.generation.consistency``); unchanged when ``cfg`` is None. With
    ``cfg.soft_steps`` the soft fit (``icsg.generation.soft_fit``) comes first and the discrete search
    polishes its result; crystals left farther than ``cfg.restart_above`` from their code are read again from
    the segmentation (``restarted``); last, positions and cell are fitted together and crystals that do not then
    reproduce their code are tried with one element changed (``exact_fits``).

    What the search may try comes from the batch, and only here, so reading without refinement pays nothing
    for it: each site's class log-probabilities (the elements tried) and the spare positions with theirs."""
    if cfg is None:
        return items
    start = copy.deepcopy(items) if cfg.restart_above is not None else None
    if b.class_probs is not None:
        _with_candidates(items, b, spec, seg)
        if cfg.soft_steps > 0:
            from icsg.generation.soft_fit import soft_fit

            fitted = soft_fit(vae, [s for s, _ in items], latents, cond, b.classes_Z, spec, cfg.soft_steps,
                              cfg.soft_top_k, z_width=cfg.z_neighbours)
            items = [(f, why) for f, (_, why) in zip(fitted, items)]
            _with_candidates(items, b, spec, seg)
    refine_sites(vae, [s for s, _ in items], latents, cond, b.classes_Z, spec, cfg)
    items = position_rounds(vae, items, b, latents, cond, spec, seg, cfg)
    if start is not None:
        items = restarted(vae, items, start, b, latents, cond, spec, seg, cfg)
    return exact_fits(vae, items, b, latents, cond, spec, cfg)


def element_refit_candidates(s: Sites, classes_Z: np.ndarray, top: int, width: int = 1) -> list[Sites]:
    """``s`` with one site's element changed, for every site and every element among its ``width`` neighbours in
    Z on either side (within ``classes_Z``) and its ``top`` likeliest classes (``Sites.log_probs``); positions and
    cell kept."""
    out = []
    for k in range(len(s.z)):
        for e in site_elements(s, k, classes_Z, top, width):
            if e != s.z[k]:
                z2 = np.asarray(s.z, dtype=np.int64).copy()
                z2[k] = e
                out.append(Sites(np.asarray(s.abc_A, np.float64), z2, np.asarray(s.centroids_vox).copy(),
                                 log_probs=s.log_probs))
    return out


def site_refit_candidates(s: Sites, classes_Z: np.ndarray, spec: GridSpec, merge_within_A: float,
                          width: int = 1) -> list[Sites]:
    """``s`` with one site removed, for every site, and with every pair of sites closer than ``merge_within_A``
    (Å) merged into one at their Z-weighted centre, its element any class (within ``classes_Z``) from the larger
    of the pair's two Z to their sum, widened by ``width`` classes on either side. Cell kept. Why: a decoded peak
    too broad for its element is read as two sites (S as O beside F, or as F beside Na); the density integrates to
    Z, so the merged site's Z lies near the sum, but the split halves are classified by shape, not by integral,
    so the sum can overshoot (see ``ConsistencyConfig.site_refit``). Distances are taken in the box, without periodic images, as
    eq. 1 draws the map: a site read at x = -0.02 is the image of the map's peak at 0, not at 0.98."""
    z = np.asarray(s.z, dtype=np.int64)
    vox = np.asarray(s.centroids_vox, dtype=np.float64)
    abc = np.asarray(s.abc_A, np.float64)
    lp = None if s.log_probs is None else np.asarray(s.log_probs)
    out = []
    if len(z) < 2:
        return out
    for k in range(len(z)):
        keep = np.arange(len(z)) != k
        out.append(Sites(abc.copy(), z[keep], vox[keep], log_probs=None if lp is None else lp[keep]))
    cart = spec.index_to_cartesian(vox, abc)
    elements = np.sort(np.asarray(classes_Z, dtype=np.int64)[np.asarray(classes_Z) > 0])
    for k in range(len(z)):
        for m in range(k + 1, len(z)):
            if np.linalg.norm(cart[m] - cart[k]) >= merge_within_A:
                continue
            centre = (z[k] * cart[k] + z[m] * cart[m]) / (z[k] + z[m])
            lo = int(np.searchsorted(elements, max(z[k], z[m])))  # the merged site's Z lies between the larger
            hi = int(np.searchsorted(elements, z[k] + z[m], side="right"))  # of the two and their sum
            near = elements[max(0, lo - width):hi + width]
            keep = (np.arange(len(z)) != k) & (np.arange(len(z)) != m)
            v = np.concatenate([vox[keep], spec.cartesian_to_index(centre, abc)[None]])
            l2 = None if lp is None else np.concatenate([lp[keep], np.logaddexp(lp[k], lp[m])[None] - np.log(2)])
            for e in dict.fromkeys([int(z[k]), int(z[m])] + [int(x) for x in near]):
                out.append(Sites(abc.copy(), np.concatenate([z[keep], [e]]), v.copy(), log_probs=l2))
    return out


def _fit_chunks(vae, sites: list[Sites], own: list[int], steps: int, latents, cond, spec, cfg,
                chunk: int) -> list[Sites]:
    """``position_fit`` of ``sites`` (crystal ``own[j]``'s code for ``sites[j]``) in chunks of ``chunk``."""
    from icsg.generation.soft_fit import position_fit

    out: list[Sites] = []
    for j in range(0, len(sites), chunk):
        o = np.asarray(own[j:j + chunk])
        out += position_fit(vae, sites[j:j + chunk], latents[o], cond[o], spec, steps, cfg.position_lr_A,
                            cfg.exact_fit_cell_lr)
    return out


def _refit_rounds(vae, items, refit: list[int], fitted: dict, fit, b, latents, cond, spec, cfg) -> set:
    """Rounds of one-element changes (and, with ``cfg.site_refit``, one site removed or two merged) of the
    crystals in ``refit``, from the reading as it came (the fit moved its cell to suit the wrong element);
    ``fitted`` is updated where a change comes nearer the code. Returns the crystals changed."""
    from icsg.generation.consistency import code_distances

    kept: set = set()
    base = {i: items[i][0] for i in refit}
    for _ in range(cfg.element_refit_rounds if refit else 0):
        owner, cands = [], []
        for i in refit:
            mine = element_refit_candidates(base[i], b.classes_Z, cfg.element_refit_top, cfg.element_refit_width)
            if cfg.site_refit:
                mine += site_refit_candidates(base[i], b.classes_Z, spec, cfg.site_merge_within_A,
                                              cfg.element_refit_width)
            owner += [i] * len(mine)
            cands += mine
        if not cands:
            break
        d = code_distances(vae, cands, latents[owner], cond[owner], spec, cfg.batch_size)
        owner_a, pick = np.asarray(owner), []
        for i in refit:  # each crystal's candidates nearest at fixed geometry
            mine = np.flatnonzero(owner_a == i)
            pick += mine[np.argsort(d[mine], kind="stable")][:cfg.element_refit_fits].tolist()
        tried = fit([cands[m] for m in pick], [owner[m] for m in pick], cfg.element_refit_steps)
        best: dict[int, Sites] = {}
        for m, f in zip(pick, tried):
            i = owner[m]
            if f.residual < (best[i] if i in best else fitted[i]).residual:
                best[i] = f
        if not best:
            break
        again = fit(list(best.values()), list(best), cfg.exact_fit_steps)
        for i, f in zip(best, again):
            fitted[i] = base[i] = f
        kept |= set(best)
        # the next round starts from the improved crystals that still do not reproduce their code
        refit = [i for i in best if fitted[i].residual >= cfg.element_refit_above]
    return kept


def exact_fits(vae, items: list[tuple], b: DecodedBatch, latents: np.ndarray, cond: np.ndarray, spec: GridSpec,
               cfg: ConsistencyConfig, chunk: int = 16, counts: dict | None = None) -> list[tuple]:
    """``items`` with positions and cell lengths fitted together through the encoder
    (``cfg.exact_fit_steps``); crystals still at least ``cfg.element_refit_above`` from their code are then tried
    with one site's element changed (``element_refit_candidates`` of the reading as it came) and, with
    ``cfg.site_refit``, with one site removed or two close sites merged (``site_refit_candidates``): the
    ``cfg.element_refit_fits`` nearest at fixed geometry, each fitted ``cfg.element_refit_steps`` steps, the
    nearest kept where nearer than the fitted reading and fitted again; up to ``cfg.element_refit_rounds`` rounds,
    each from the crystals the last one improved that are still not reproduced. Only a crystal that ends closer than
    ``cfg.exact_below`` keeps the fitted cell; any other gets its cell back (fractional coordinates kept), is
    scored again and replaces the reading only where nearer its code. ``counts`` (if given) is incremented with
    'crystals', 'exact_first', 'refit', 'refit_kept', 'exact'. Unchanged when ``cfg.exact_fit_steps`` is 0.
    Why: see ``ConsistencyConfig.exact_below``."""
    if cfg.exact_fit_steps <= 0:
        return items
    from icsg.generation.consistency import code_distances

    latents, cond = np.asarray(latents), np.asarray(cond)
    todo = [i for i, (s, _) in enumerate(items) if s is not None and len(s.z)]
    if not todo:
        return items
    fit = partial(_fit_chunks, vae, latents=latents, cond=cond, spec=spec, cfg=cfg, chunk=chunk)
    fitted = dict(zip(todo, fit([items[i][0] for i in todo], todo, cfg.exact_fit_steps)))
    n_exact_first = sum(fitted[i].residual < cfg.exact_below for i in todo)
    refit = [i for i in todo if cfg.element_refit_above is not None and b.class_probs is not None
             and fitted[i].residual >= cfg.element_refit_above]
    n_refit = len(refit)
    kept = _refit_rounds(vae, items, refit, fitted, fit, b, latents, cond, spec, cfg)
    # not reproduced: the fitted cell made up for something else, so the read cell comes back
    back = [i for i in todo if fitted[i].residual >= cfg.exact_below]
    for i in back:
        f = fitted[i]
        fitted[i] = Sites(np.asarray(items[i][0].abc_A, np.float64), f.z, f.centroids_vox, log_probs=f.log_probs,
                          moves=f.moves)
    if back:
        d = code_distances(vae, [fitted[i] for i in back], latents[back], cond[back], spec, cfg.batch_size)
        for i, di in zip(back, d):
            fitted[i].residual = float(di)
    out = list(items)
    for i in todo:
        f, s = fitted[i], items[i][0]
        if not f.residual < (np.inf if np.isnan(s.residual) else s.residual):  # the distance never rises
            continue
        # class log-probabilities came along with the sites (a refit candidate's rows follow its sites); the
        # spare positions stay the reading's
        f.spare_vox, f.spare_log_probs = s.spare_vox, s.spare_log_probs
        out[i] = (f, items[i][1])
    if counts is not None:
        for k, v in (("crystals", len(todo)), ("exact_first", n_exact_first), ("refit", n_refit),
                     ("refit_kept", len(kept)), ("exact", sum(out[i][0].residual < cfg.exact_below for i in todo))):
            counts[k] = counts.get(k, 0) + int(v)
    return out


def restarted(vae, first: list[tuple], start: list[tuple], b: DecodedBatch, latents: np.ndarray, cond: np.ndarray,
              spec: GridSpec, seg: SegmentationConfig, cfg: ConsistencyConfig) -> list[tuple]:
    """``first`` (the refined reading) with every crystal still farther than ``cfg.restart_above`` from its code
    read a second time (``second_reading``) from ``start``, its segmentation (``batch_to_sites`` output, not
    refined); per crystal the reading nearer its code is kept. Why: the soft fit sometimes walks away from a
    segmentation that was right, and leaves positions too far off for the search to come back
    (``ConsistencyConfig.restart_above``)."""
    if cfg.restart_above is None or b.class_probs is None:
        return first
    redo = [i for i, ((f, _), (s, _)) in enumerate(zip(first, start))
            if f is not None and s is not None and len(s.z) and f.residual > cfg.restart_above]
    if not redo:
        return first
    second = second_reading(vae, [start[i] if i in redo else (None, start[i][1]) for i in range(len(start))],
                            b, latents, cond, spec, seg, cfg)
    out = list(first)
    for i in redo:
        s = second[i][0]
        if s is not None and s.residual < first[i][0].residual:
            out[i] = second[i]
    return out


def second_reading(vae, start: list[tuple], b: DecodedBatch, latents: np.ndarray, cond: np.ndarray, spec: GridSpec,
                   seg: SegmentationConfig, cfg: ConsistencyConfig) -> list[tuple]:
    """Segmented crystals (``batch_to_sites`` output; None entries passed over) read without the soft fit:
    positions fitted through the encoder first, then the discrete search and the position rounds."""
    from icsg.generation.soft_fit import position_fit

    _with_candidates(start, b, spec, seg)
    fitted = position_fit(vae, [s for s, _ in start], latents, cond, spec, cfg.position_steps, cfg.position_lr_A)
    items = [(f, why) for f, (_, why) in zip(fitted, start)]
    _with_candidates(items, b, spec, seg)
    refine_sites(vae, [s for s, _ in items], latents, cond, b.classes_Z, spec, cfg)
    return position_rounds(vae, items, b, latents, cond, spec, seg, cfg)


def position_rounds(vae, items: list[tuple], b: DecodedBatch, latents: np.ndarray, cond: np.ndarray,
                    spec: GridSpec, seg: SegmentationConfig, cfg: ConsistencyConfig) -> list[tuple]:
    """The searched crystals with their positions fitted (``icsg.generation.soft_fit.position_fit``), then
    searched again from the candidates at the new positions; ``cfg.position_rounds`` times, none without
    ``cfg.position_steps`` or class probabilities."""
    if b.class_probs is None or cfg.position_steps <= 0:
        return items
    from icsg.generation.soft_fit import position_fit

    for _ in range(cfg.position_rounds):
        fitted = position_fit(vae, [s for s, _ in items], latents, cond, spec, cfg.position_steps, cfg.position_lr_A)
        items = [(f, why) for f, (_, why) in zip(fitted, items)]
        _with_candidates(items, b, spec, seg)
        refine_sites(vae, [s for s, _ in items], latents, cond, b.classes_Z, spec, cfg)
    return items


def batch_to_structures(b: DecodedBatch, spec: GridSpec, seg: SegmentationConfig = SegmentationConfig(),
                        workers: int = 1, progress: bool = False) -> list[tuple]:
    """[(Structure or None, failure reason or None)] for every map of the batch."""
    return structures_from_sites(batch_to_sites(b, spec, seg, workers, progress), spec, seg)
