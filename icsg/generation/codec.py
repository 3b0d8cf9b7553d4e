"""Crystals <-> codes with the shipped networks: one object for reconstruction and generation.

A code is z = [z_map, z_read] (``icsg.models.readout``): z_map (the Cond-DFC-VAE's latent) is decoded
into the density map that places the sites, z_read is read by the readout heads into the composition
and the cell. Two readings of a code:

    'fast'   (default) decoder -> UNet (one pass) -> regions -> the heads' composition assigned to the
             regions (``icsg.generation.reading``); batched, a fraction of a second per crystal.
    'exact'  the per-crystal search through the encoder (``icsg.generation.consistency``): the crystal
             whose code comes closest to z_map, from the UNet averaged over 4 rotations and the density
             profile fit; tens of seconds per crystal, opt-in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from icsg.generation.composition import CompositionPrior, runner_up_counts
from icsg.generation.reading import (READINGS, FastReadingConfig, candidates, choose, contact_ratio, ion_signs,
                                    ionic_contacts, min_separation_A, read_batch)
from icsg.grid import GridSpec


@dataclass
class Decoded:
    """What ``DensityCodec.decode`` returns for a batch: one entry per code."""

    structures: list          # Structure or None
    reasons: list             # None or why the code did not decode
    sites: list               # icsg.generation.consistency.Sites or None
    property_pred: np.ndarray  # (B,) the readout's property head
    slices: np.ndarray         # (B, n, n) decoded density, middle slice along z (for plots)


class DensityCodec:
    """The Cond-DFC-VAE, its readout encoder and the UNet of one weights folder.

    Args:
        weights_dir: folder with vae.*, readout.* and unet.* (default: the shipped weights).
        batch_size: maps per decoder / UNet batch.
        workers: processes for the per-crystal reading.
        fast: settings of the fast reading.
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None, batch_size: int = 16, workers: int = 1,
                 fast: FastReadingConfig = FastReadingConfig()):
        from icsg.pretrained import WEIGHTS_DIR, load_readout, load_unet, load_vae

        self.weights_dir = weights_dir or WEIGHTS_DIR
        self.vae, self.vae_meta = load_vae(self.weights_dir)
        self.unet, self.unet_meta = load_unet(self.weights_dir)
        self.readout, self.readout_meta = load_readout(self.weights_dir)
        from icsg.models.readout import ReadoutConfig

        self.readout_cfg = ReadoutConfig.from_dict(self.readout_meta["config"])
        self.spec = GridSpec.from_dict(self.vae_meta["grid"])
        self.map_dim = int(self.vae_meta["config"]["latent_dim"])
        self.code_dim = self.map_dim + self.readout_cfg.latent_dim
        self.condition = self.vae_meta["condition"]
        self.batch_size, self.workers, self.fast = batch_size, workers, fast

    # --- encoding -------------------------------------------------------------------------------------
    def encode_maps(self, x: np.ndarray, cond: np.ndarray, site_Z: np.ndarray, site_frac: np.ndarray,
                    abc_A: np.ndarray) -> np.ndarray:
        """Codes (B, code_dim), posterior means: z_map of the maps [M, C] (B, n, n, n, 4) under one-hot
        conditions (B, K), z_read of the crystals' sites (Z (B, S), 0-padded; fractional coordinates
        (B, S, 3)) and cells (B, 3) Å."""
        x, cond = np.asarray(x, np.float32), np.asarray(cond, np.float32)
        mu, _ = self.vae.encoder.predict([x, cond], batch_size=self.batch_size, verbose=0)
        mu_r, _ = self.readout.encoder.predict([np.asarray(site_Z, np.int32), np.asarray(site_frac, np.float32),
                                                np.asarray(abc_A, np.float32)], batch_size=1024, verbose=0)
        return np.concatenate([np.asarray(mu), np.asarray(mu_r)], axis=1).astype(np.float32)

    def encode(self, structures: list, cond: np.ndarray, items: list | None = None) -> np.ndarray:
        """Codes (B, code_dim) of standardised crystals (``icsg.data.filters.standardise``) under one-hot
        conditions (B, K)."""
        from icsg.models.readout import site_arrays
        from icsg.representation.density import encode

        encs = [encode(s, self.spec, item=(items or [""] * len(structures))[i]) for i, s in enumerate(structures)]
        x = np.stack([np.concatenate([e.density[..., None], e.coords], -1) for e in encs]).astype(np.float32)
        return self.encode_maps(x, cond, *site_arrays(structures, self.readout_cfg.max_sites),
                                np.stack([e.abc_A for e in encs]))

    def _site_rows(self, sites: list) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(indices of the Sites the readout can take, their Z (k, S) and fractional coordinates (k, S, 3))."""
        cap = self.readout_cfg.max_sites
        idx = [i for i, s in enumerate(sites) if s is not None and 0 < len(s.z) <= cap]
        zs = np.zeros((len(idx), cap), np.int32)
        fr = np.zeros((len(idx), cap, 3), np.float32)
        for row, i in enumerate(idx):
            s = sites[i]
            zs[row, :len(s.z)] = s.z
            fr[row, :len(s.z)] = np.mod(self.spec.index_to_cartesian(s.centroids_vox, s.abc_A) / s.abc_A, 1.0)
        return idx, zs, fr

    def snap_positions(self, z_read: np.ndarray, sites: list) -> None:
        """Move the read sites (``Sites``, in place; ``z_read`` row i belongs to ``sites[i]``) to where the code puts
        them: the position head's correction of each site's fractional position, given its element."""
        idx, zs, fr = self._site_rows(sites)
        if not idx:
            return
        delta = np.asarray(self.readout.positions.predict([np.asarray(z_read, np.float32)[idx], zs, fr],
                                                          batch_size=1024, verbose=0))
        for row, i in enumerate(idx):
            s = sites[i]
            new = np.mod(fr[row, :len(s.z)] + delta[row, :len(s.z)], 1.0)
            s.centroids_vox = self.spec.cartesian_to_index(new * s.abc_A, s.abc_A)

    def read_codes(self, sites: list) -> tuple[list[int], np.ndarray]:
        """(indices of the Sites the readout encoder can take, their readout codes (k, latent) = posterior means
        of their sites and cell)."""
        idx, zs, fr = self._site_rows(sites)
        if not idx:
            return idx, np.zeros((0, self.code_dim - self.map_dim), np.float32)
        abc = np.stack([sites[i].abc_A for i in idx]).astype(np.float32)
        mu, _ = self.readout.encoder.predict([zs, fr, abc], batch_size=1024, verbose=0)
        return idx, np.asarray(mu)

    def misfit(self, z_read: np.ndarray, sites: list) -> np.ndarray:
        """(len(sites),) squared distance between each reading's readout code and the z_read it was read from
        (row i for ``sites[i]``); inf for a reading the encoder cannot take."""
        idx, mu = self.read_codes(sites)
        out = np.full(len(sites), np.inf)
        if idx:
            out[idx] = ((mu - np.asarray(z_read, np.float32)[idx]) ** 2).sum(1)
        return out

    def read_property(self, sites: list) -> np.ndarray:
        """(len(sites),) the readout's estimate of the conditioning property of each crystal (its code's
        property head; NaN where there is no crystal): a second opinion beside the CGCNN, cheap enough to rank
        many samples with."""
        idx, mu = self.read_codes(sites)
        out = np.full(len(sites), np.nan)
        if idx:
            out[idx] = self.heads(mu)[3]
        return out

    def consistent(self, z_read: np.ndarray, items: list, counts: np.ndarray, count_logp: np.ndarray,
                   cell_A: np.ndarray, generating: bool = False) -> list:
        """[(Sites or None, reason)]: for each crystal, of the map reading in ``items``, the other orders of its
        elements and the slot readings (``icsg.generation.reading.candidates``), also of the heads' runner-up
        compositions, the one whose readout code is closest to z_read, positions snapped first when the fast
        reading snaps; readings with atoms closer than ``min_separation_A`` only when every one has them.
        ``generating`` (codes from a prior, compositions kept to the training numbers of sites): the
        runner-up compositions keep the number of sites, and ionic readings are preferred
        (``FastReadingConfig.ionic``), then readings without overlapping atoms (``min_contact_ratio``); codes of
        real crystals choose by the code alone."""
        from icsg.generation.reading import slot_reading

        slots = self.slots(z_read, counts)
        cands = [candidates(s, *slots[i], cell_A[i], self.spec, self.fast) for i, (s, _) in enumerate(items)]
        if self.fast.alt_compositions:
            alts = [runner_up_counts(lp, self.fast.alt_compositions, c, keep_total=generating)
                    for lp, c in zip(count_logp, counts)]
            rows = [i for i, a in enumerate(alts) for _ in a]
            if rows:
                alt_slots = self.slots(np.asarray(z_read)[rows], np.stack([c for a in alts for c in a]))
                for i, (z, f) in zip(rows, alt_slots):
                    if len(z):
                        cands[i] += [slot_reading(items[i][0], z, f, cell_A[i], self.spec, tol)
                                     for tol in self.fast.slot_tols_A]
        owner = np.repeat(np.arange(len(cands)), [len(c) for c in cands])
        flat = [c for cs in cands for c in cs]
        if not flat:
            return items
        if self.fast.snap_positions:
            self.snap_positions(np.asarray(z_read)[owner], flat)
        d = self.misfit(np.asarray(z_read)[owner], flat)
        sep = np.array([min_separation_A(c, self.spec) for c in flat])
        ionic = (np.array([ionic_contacts(c, self.spec, ion_signs(c.z)) for c in flat])
                 if self.fast.ionic and generating else None)
        roomy = (np.array([contact_ratio(c, self.spec) >= self.fast.min_contact_ratio for c in flat])
                 if self.fast.min_contact_ratio > 0 and generating else None)
        out, start = [], 0
        for i, cs in enumerate(cands):
            part = slice(start, start + len(cs))
            k = (choose(d[part], sep[part], self.fast.min_separation_A, *(None if m is None else m[part]
                                                                           for m in (ionic, roomy)))
                 if cs else -1)
            out.append((flat[start + k], None) if k >= 0 else items[i])
            start += len(cs)
        return out

    def slots(self, z_read: np.ndarray, counts: np.ndarray) -> list[tuple]:
        """[(Z (n,), fractional positions (n, 3))]: each crystal's atoms as the readout's slot head places them,
        for the element counts (B, E) over the readout's elements (``icsg.models.readout``)."""
        from icsg.segmentation.assign import element_slots

        cap = self.readout_cfg.max_sites
        zs = np.zeros((len(counts), cap), np.int32)
        for i, c in enumerate(counts):
            z = element_slots(c, self.readout_cfg.elements_Z)[:cap]
            zs[i, :len(z)] = z
        frac = np.asarray(self.readout.slots.predict([np.asarray(z_read, np.float32), zs], batch_size=1024,
                                                     verbose=0), np.float64)
        n = (zs > 0).sum(1)
        return [(zs[i, :n[i]].astype(np.int64), frac[i, :n[i]]) for i in range(len(zs))]

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"codes must be (B, {self.code_dim}) = z_map ({self.map_dim}) + z_read "
                             f"({self.code_dim - self.map_dim}); got {z.shape}")
        return z[:, :self.map_dim], z[:, self.map_dim:]

    def heads(self, z_read: np.ndarray):
        """(counts (B, E), count log-probabilities (B, E, K), cell (B, 3) Å, property (B,)) of readout codes."""
        from icsg.models.readout import read_heads

        out = self.readout.heads.predict(np.asarray(z_read, np.float32), batch_size=1024, verbose=0)
        return read_heads(out, self.readout_cfg)

    # --- decoding -------------------------------------------------------------------------------------
    def decode(self, z: np.ndarray, cond: np.ndarray, reading: str = "fast", exact=None,
               progress: bool = False, composition_prior: CompositionPrior | None = None) -> Decoded:
        """Codes (B, code_dim) under one-hot conditions (B, K) -> crystals, in batches of ``batch_size``.
        ``exact``: a ``ConsistencyConfig`` for reading='exact' (default: its defaults). ``composition_prior``
        (``icsg.generation.composition.CompositionPrior``) keeps the fast reading's compositions to the numbers of
        sites and anonymous formulas the data has: for codes drawn from a prior, which can fall between the
        codes of real crystals; None reads the heads as they are (reconstruction)."""
        from tqdm.auto import tqdm

        if reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
        parts = []
        with tqdm(total=len(z), desc=f"decoding ({reading})", unit="crystal", disable=not progress) as bar:
            for i in range(0, len(z), self.batch_size):
                parts.append(self._decode_chunk(z[i:i + self.batch_size], cond[i:i + self.batch_size], reading,
                                                exact, composition_prior))
                bar.update(len(parts[-1].structures))
        n = self.spec.size
        return Decoded(*[sum((getattr(p, f) for p in parts), []) for f in ("structures", "reasons", "sites")],
                       np.concatenate([p.property_pred for p in parts]) if parts else np.zeros(0),
                       np.concatenate([p.slices for p in parts]) if parts else np.zeros((0, n, n)))

    def _decode_chunk(self, z, cond, reading, exact, composition_prior=None) -> Decoded:
        from icsg.generation.pipeline import structures_from_sites
        from icsg.segmentation.unet_inference import calibrated_class_probs, class_to_z, segment_maps

        z_map, z_read = self.split(z)
        cond = np.asarray(cond, np.float32)
        counts, count_logp, cell, prop = self.heads(z_read)
        if composition_prior is not None:
            counts = composition_prior.counts(count_logp)
        x = np.asarray(self.vae.decoder.predict([z_map, cond], batch_size=self.batch_size, verbose=0))
        els = self.unet_meta["elements_Z"]
        if reading == "exact":
            items, seg = self._exact(x, z_map, cond, exact)
        else:
            species, occ, probs = segment_maps(self.unet, x[..., 0], els, self.batch_size, rotations=1,
                                               return_probs=True)
            probs = calibrated_class_probs(probs, occ, self.unet_meta.get("class_weights"))
            items = read_batch(x[..., 0], species, occ, probs, class_to_z(els), counts,
                               self.readout_cfg.elements_Z, cell, self.spec, self.fast, self.workers)
            if self.fast.consistent:
                items = self.consistent(z_read, items, counts, count_logp, cell,
                                        generating=composition_prior is not None)
            elif self.fast.snap_positions:
                self.snap_positions(z_read, [s for s, _ in items])
            from icsg.segmentation.watershed import SegmentationConfig

            seg = SegmentationConfig()
        structs = structures_from_sites(items, self.spec, seg)
        return Decoded([s for s, _ in structs], [why for _, why in structs], [s for s, _ in items], prop,
                       x[:, :, :, self.spec.size // 2, 0].copy())

    def _exact(self, x, z_map, cond, cfg):
        """The search reading (``icsg.generation.pipeline.refined``) with the settings it was measured with."""
        from icsg.generation.search_config import ConsistencyConfig
        from icsg.generation.latent_cell import cell_readout
        from icsg.generation.pipeline import batch_to_sites, refined, segmented_batch
        from icsg.segmentation.unet_inference import segmentation_for

        els = self.unet_meta["elements_Z"]
        seg = segmentation_for(els, "fit", maps="decoded")
        b = segmented_batch(self.unet, x[..., 0], x[..., 1:], els, self.batch_size,
                            class_weights=self.unet_meta.get("class_weights"))
        b = replace(b, cell_A=cell_readout(self.weights_dir, "latent", self.vae_meta).predict(z_map, cond))
        items = batch_to_sites(b, self.spec, seg, workers=self.workers)
        return refined(self.vae, items, b, z_map, cond, self.spec, seg, cfg or ConsistencyConfig()), seg
