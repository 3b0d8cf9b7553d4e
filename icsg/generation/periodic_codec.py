"""Codes of crystals of any lattice and their fast reading: z = [z_map, z_read], as for the cubic models.

z_map is the periodic Cond-DFC-VAE's latent (the map over the unit cell in fractional coordinates); z_read is the
readout encoder's (``icsg.models.readout`` with six cell numbers), read by its heads into the element counts, the
cell (lengths Å, angles °) and, through the slot head, each element's fractional positions. The reading is one
pass of small dense heads, no search: the composition and the positions of a general crystal are what the
decoded map leaves most ambiguous (86 elements; sites a UNet labels from a blurred periodic map), and what the
code carries exactly: the readout's site path puts each site's (cos, sin) of 2πx in the code linearly and the slot
head reads it back (``ReadoutConfig.site_features``). z_map stays in the code, so a code's density map can still be
decoded (``vae.decoder``).
"""

from __future__ import annotations

import os

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from icsg.generation.composition import counts_preferring_balanced
from icsg.models.readout import read_heads, site_arrays
from icsg.pretrained import WEIGHTS_DIR, load_readout, load_vae
from icsg.representation.periodic import PeriodicGrid, encode_periodic
from icsg.representation.sites import canonical_sites
from icsg.segmentation.assign import element_slots


def cell_rows(structures) -> np.ndarray:
    """(B, 6) lengths Å and angles ° of each crystal's cell, the readout encoder's cell input."""
    return np.array([list(s.lattice.abc) + list(s.lattice.angles) for s in structures], np.float32)


def separate_atoms(frac: np.ndarray, lattice: Lattice, min_A: float, iterations: int = 100) -> np.ndarray:
    """Fractional positions (n, 3), n >= 1, moved apart until no two atoms (periodic images included) are closer
    than ``min_A``: each too-close pair moves apart along its line by half the shortfall each, for up to
    ``iterations`` rounds (a cell too small for its atoms stays crowded). The slot head places the slots of one
    crystal independently and, for codes between training crystals, sometimes two atoms of different elements on
    one spot; no training crystal has two atoms closer than 0.97 Å."""
    frac = np.array(frac, np.float64)
    inv = np.linalg.inv(lattice.matrix)
    for _ in range(iterations):
        d = frac[:, None, :] - frac[None, :, :]
        cart = (d - np.round(d)) @ lattice.matrix  # (n, n, 3) from j to i, nearest image along the cell axes
        r = np.linalg.norm(cart, axis=-1) + np.eye(len(frac)) * 1e9
        if r.min() >= min_A:
            break
        push = np.where(r < min_A, (min_A - r) / 2 / np.maximum(r, 1e-6), 0.0)[..., None] * cart
        stuck = (r < 1e-6)[..., None]  # two atoms on one spot: apart along a
        push = np.where(stuck, np.sign(np.arange(len(frac))[:, None, None] - np.arange(len(frac))[None, :, None])
                        * lattice.matrix[0] / np.linalg.norm(lattice.matrix[0]) * min_A / 2, push)
        frac = frac + push.sum(1) @ inv
    return np.mod(frac, 1.0)


class PeriodicCodec:
    """Periodic VAE + readout of a weights folder (``vae.*``, ``readout.*``) or two run folders."""

    def __init__(self, vae_location: str | os.PathLike = WEIGHTS_DIR, readout_location: str | os.PathLike | None = None,
                 batch_size: int = 16):
        self.vae, self.vae_meta = load_vae(vae_location)
        self.readout, self.readout_meta = load_readout(readout_location or vae_location)
        self.cfg = self.readout.cfg
        if not self.vae_meta.get("config", {}).get("periodic") or not self.cfg.angles:
            raise ValueError(f"{vae_location}: the periodic codec needs a periodic VAE and a six-number-cell readout")
        self.grid = PeriodicGrid.from_dict(self.vae_meta["grid"])
        self.condition = self.vae_meta["condition"]
        self.map_dim = int(self.vae_meta["config"]["latent_dim"])
        self.batch_size = batch_size

    def encode(self, structures: list[Structure], cond: np.ndarray, items: list | None = None) -> np.ndarray:
        """(B, map_dim + read_dim) posterior means of the crystals (canonical cells, ``encode_periodic``)."""
        enc = [encode_periodic(s, self.grid, item=(items[i] if items else "")) for i, s in enumerate(structures)]
        x = np.stack([np.concatenate([e.density[..., None], e.coords], -1) for e in enc]).astype(np.float32)
        z_map = np.asarray(self.vae.encoder.predict([x, cond], batch_size=self.batch_size, verbose=0)[0])
        return np.concatenate([z_map, self.read_codes([e.structure for e in enc])], 1)

    def encode_maps(self, x: np.ndarray, cond: np.ndarray, site_Z: np.ndarray, site_frac: np.ndarray,
                    abc_A: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
        """Whole codes of prepared arrays: maps [M, C] (B, n, n, n, 4) and the same crystals' site lists and cells."""
        z_map = np.asarray(self.vae.encoder.predict([x, cond], batch_size=self.batch_size, verbose=0)[0])
        zs, fr = canonical_sites(np.asarray(site_Z, np.int32), np.asarray(site_frac, np.float32))
        cell = np.concatenate([abc_A, angles_deg], 1).astype(np.float32)
        mu, _ = self.readout.encoder.predict([zs[:, :self.cfg.max_sites], fr[:, :self.cfg.max_sites], cell],
                                             batch_size=256, verbose=0)
        return np.concatenate([z_map, np.asarray(mu)], 1)

    def read_codes(self, structures: list[Structure]) -> np.ndarray:
        """(B, read_dim) readout posterior means of the crystals as given."""
        zs, fr = site_arrays(structures, self.cfg.max_sites)
        mu, _ = self.readout.encoder.predict([zs, fr, cell_rows(structures)], batch_size=256, verbose=0)
        return np.asarray(mu)

    def decode(self, z: np.ndarray, formulas: tuple | None = None, min_distance_A: float | None = None
               ) -> list[Structure | None]:
        """Codes (B, map_dim + read_dim) -> crystals (None where the heads give an impossible cell). A code whose
        element counts all read 0 (~5 % of codes from the flow prior) takes the
        one-element change of its counts the count head finds most probable: a crystal has at least one atom.

        For codes drawn from a prior: ``formulas`` (anonymous formulas (P, L), training crystals per formula (P,))
        reads the composition by ``counts_preferring_balanced`` instead of each element's likeliest count;
        ``min_distance_A`` pushes atoms closer than that apart (``separate_atoms``)."""
        z = np.asarray(z, np.float32)
        z_read = z[:, self.map_dim:]
        counts, logp, cell, _ = read_heads(self.readout.heads.predict(z_read, batch_size=1024, verbose=0), self.cfg)
        if formulas is not None:
            counts = counts_preferring_balanced(logp, *formulas, self.cfg.elements_Z)
        for i in np.flatnonzero(counts.sum(1) == 0):  # every count reads 0: the likeliest one-element change
            gain = logp[i, :, 1:].max(-1) - logp[i, :, 0]
            e = int(gain.argmax())
            counts[i, e] = 1 + int(logp[i, e, 1:].argmax())
        site_Z = np.zeros((len(z), self.cfg.max_sites), np.int32)
        for i, c in enumerate(counts):
            zi = element_slots(c, self.cfg.elements_Z)[:self.cfg.max_sites]
            site_Z[i, :len(zi)] = zi
        frac = np.asarray(self.readout.slots.predict([z_read, site_Z], batch_size=1024, verbose=0), np.float64)
        out = []
        for i in range(len(z)):
            n = int((site_Z[i] > 0).sum())
            try:
                lattice = Lattice.from_parameters(*cell[i])
                if n == 0 or not lattice.volume > 0:
                    raise ValueError("no atoms or no volume")
                f = frac[i, :n] if min_distance_A is None else separate_atoms(frac[i, :n], lattice, min_distance_A)
                out.append(Structure(lattice, [Element.from_Z(int(k)) for k in site_Z[i, :n]], np.mod(f, 1)))
            except ValueError:
                out.append(None)
        return out
