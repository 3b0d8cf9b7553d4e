"""Crystal code: a crystal as the stacked latents of the iMatGen-style autoencoders, and back.

    x = [cell code | slot_1 | ... | slot_S],  slot_k = [basis code, (Z, χ, r_Å) standardised, present]

Slots hold a crystal's elements in order of Pauling electronegativity (then Z), so a
perovskite's A cation, B cation and anion keep their places across the data set. The
code is standardised per dimension with training-set statistics; the materials VAE and
the CCDCGAN-style GAN both work in this space, and both decode through ``CrystalCodec``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Structure

from icsg.errors import CrystalError
from icsg.models.imatgen import ImatgenModelConfig
from icsg.representation.imatgen import basis_images, cell_image, decode_imatgen
from icsg.representation.radii import ionic_radius_A


def element_descriptor(z: int) -> np.ndarray:
    """(Z, Pauling χ, mean Shannon ionic radius Å) of one element."""
    el = Element.from_Z(int(z))
    chi = el.X if el.X == el.X else 0.0
    return np.array([float(z), float(chi), ionic_radius_A(el.symbol)])


def slot_elements(structure: Structure, n_slots: int, item: str = "") -> list[str]:
    """The crystal's element symbols in slot order; CrystalError if there are more than ``n_slots``."""
    els = sorted(structure.composition.elements, key=lambda e: ((e.X if e.X == e.X else 0.0), e.Z))
    if len(els) > n_slots:
        raise CrystalError(item or structure.composition.reduced_formula, "too_many_elements",
                           f"{len(els)} elements, the crystal code has {n_slots} slots")
    return [e.symbol for e in els]


def crystal_images(structure: Structure, cfg: ImatgenModelConfig, item: str = ""):
    """(cell image (m^3), basis images (S, n^3) with empty slots zero, slot Z (S,), 0 = empty)."""
    if not structure.is_ordered:
        raise CrystalError(item or structure.composition.formula, "disordered", "partial occupancies")
    spec = cfg.spec
    symbols = slot_elements(structure, cfg.n_slots, item)
    for s in symbols:
        ionic_radius_A(s, item=item)
    basis, _ = basis_images(structure, symbols, spec, item)
    out = np.zeros((cfg.n_slots,) + basis.shape[1:], dtype=np.float32)
    out[: len(symbols)] = basis
    slot_z = np.zeros(cfg.n_slots, dtype=np.int16)
    slot_z[: len(symbols)] = [Element(s).Z for s in symbols]
    return cell_image(structure.lattice, spec), out, slot_z


@dataclass
class CodeStats:
    """Standardisation of codes and element descriptors (training-set statistics)."""

    elements_Z: list[int]
    desc_mean: np.ndarray
    desc_std: np.ndarray
    code_mean: np.ndarray | None = None
    code_std: np.ndarray | None = None

    @classmethod
    def for_elements(cls, elements_Z) -> "CodeStats":
        zs = sorted({int(z) for z in elements_Z if z > 0})
        d = np.stack([element_descriptor(z) for z in zs])
        return cls(zs, d.mean(0), d.std(0) + 1e-6)

    def to_dict(self) -> dict:
        return {"elements_Z": self.elements_Z, "desc_mean": self.desc_mean.tolist(),
                "desc_std": self.desc_std.tolist(),
                "code_mean": None if self.code_mean is None else self.code_mean.tolist(),
                "code_std": None if self.code_std is None else self.code_std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CodeStats":
        arr = (lambda v: None if v is None else np.asarray(v, dtype=np.float32))
        return cls(list(d["elements_Z"]), arr(d["desc_mean"]), arr(d["desc_std"]), arr(d.get("code_mean")),
                   arr(d.get("code_std")))


class CrystalCodec:
    """Images <-> codes <-> structures with the trained cell and basis autoencoders."""

    def __init__(self, cfg: ImatgenModelConfig, cell_ae, basis_ae, stats: CodeStats):
        self.cfg, self.stats = cfg, stats
        self.cell_encoder, self.cell_decoder = cell_ae[0], cell_ae[1]
        self.basis_encoder, self.basis_decoder = basis_ae[0], basis_ae[1]
        table = np.stack([element_descriptor(z) for z in stats.elements_Z])
        self._table = (table - stats.desc_mean) / stats.desc_std

    # --- raw (unstandardised) codes ---------------------------------------------------
    def raw_codes(self, cells: np.ndarray, bases: np.ndarray, slot_z: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, m^3), (N, S, n^3), (N, S) -> (N, code_dim), before standardisation."""
        c = self.cfg
        n = len(cells)
        cell_code = np.asarray(self.cell_encoder.predict(cells[..., None].astype(np.float32), batch_size=batch,
                                                         verbose=0))
        flat = bases.reshape((n * c.n_slots,) + bases.shape[2:])[..., None].astype(np.float32)
        basis_code = np.asarray(self.basis_encoder.predict(flat, batch_size=batch, verbose=0))
        basis_code = basis_code.reshape(n, c.n_slots, c.basis_latent)
        present = (slot_z > 0).astype(np.float32)
        desc = np.zeros((n, c.n_slots, 3), dtype=np.float32)
        for i in range(n):
            for k in range(c.n_slots):
                if slot_z[i, k] > 0:
                    desc[i, k] = (element_descriptor(slot_z[i, k]) - self.stats.desc_mean) / self.stats.desc_std
        basis_code = basis_code * present[..., None]  # an empty slot is all zeros
        slots = np.concatenate([basis_code, desc, present[..., None]], axis=-1).reshape(n, -1)
        return np.concatenate([cell_code, slots], axis=1).astype(np.float32)

    def fit_standardisation(self, raw: np.ndarray) -> None:
        self.stats.code_mean = raw.mean(0).astype(np.float32)
        self.stats.code_std = (raw.std(0) + 1e-3).astype(np.float32)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.stats.code_mean) / self.stats.code_std).astype(np.float32)

    def encode(self, cells, bases, slot_z, batch: int = 64) -> np.ndarray:
        return self.standardise(self.raw_codes(cells, bases, slot_z, batch))

    def encode_structures(self, structures: list[Structure], items: list[str] | None = None) -> np.ndarray:
        imgs = [crystal_images(s, self.cfg, (items or [""] * len(structures))[i]) for i, s in enumerate(structures)]
        return self.encode(np.stack([a for a, _, _ in imgs]), np.stack([b for _, b, _ in imgs]),
                           np.stack([z for _, _, z in imgs]))

    # --- decoding ------------------------------------------------------------------------
    def nearest_element(self, desc_std: np.ndarray) -> int:
        return int(self.stats.elements_Z[int(np.argmin(np.sum((self._table - desc_std) ** 2, axis=1)))])

    def decode(self, codes: np.ndarray, batch: int = 64) -> tuple[list, np.ndarray]:
        """Standardised codes (N, D) -> ([(Structure or None, failure or None)], basis mid-slices (N, n, n))."""
        c = self.cfg
        raw = codes * self.stats.code_std + self.stats.code_mean
        n = len(raw)
        cells = np.asarray(self.cell_decoder.predict(raw[:, : c.cell_latent], batch_size=batch, verbose=0))[..., 0]
        slots = raw[:, c.cell_latent:].reshape(n, c.n_slots, c.slot_dim)
        flat = slots[..., : c.basis_latent].reshape(n * c.n_slots, c.basis_latent)
        bases = np.asarray(self.basis_decoder.predict(flat, batch_size=batch, verbose=0))[..., 0]
        bases = bases.reshape((n, c.n_slots) + bases.shape[1:])
        out, slices = [], bases.sum(1)[:, :, :, c.basis_size // 2]
        for i in range(n):
            images: dict[str, np.ndarray] = {}
            for k in range(c.n_slots):
                if slots[i, k, -1] < 0.5:
                    continue
                sym = Element.from_Z(self.nearest_element(slots[i, k, c.basis_latent:c.basis_latent + 3])).symbol
                images[sym] = np.maximum(images[sym], bases[i, k]) if sym in images else bases[i, k]
            if not images:
                out.append((None, "no occupied element slot"))
                continue
            try:
                s = decode_imatgen(cells[i], np.stack(list(images.values())), list(images), c.spec)
                out.append((s, None))
            except ValueError as exc:
                out.append((None, str(exc)))
        return out, slices
