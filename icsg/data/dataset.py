"""Encoded datasets on disk: shards of voxel arrays, a manifest, splits, property bins.

Layout of a dataset folder::

    manifest.json           counts, rejections with reasons, grid, elements, property bins
    shards/shard_00000.npz  density (k, n, n, n) float32, species (k, n, n, n) uint8 (Z),
                            abc_A (k, 3), ids (k,), split (k,) 0=train 1=val, prop (k,),
                            site_Z (k, max_atoms) uint8: Z of each site of the cell, heaviest first,
                            0-padded; site_frac (k, max_atoms, 3) their fractional coordinates;
                            angles_deg (k, 3) of the cell; prop_predicted (k,) bool: the property
                            value is a model's prediction (``--fill-property``), not the source's

Two encodings: 'density' (the paper's cubic box, ``icsg.grid.GridSpec``) and 'periodic' (any lattice, a grid
over the Niggli-reduced unit cell, ``icsg.representation.periodic.PeriodicGrid``); the manifest's grid
says which.

Shards are written atomically (temporary name, then rename) and a rerun skips the
shards already on disk, so an interrupted ``icsg prepare`` resumes where it stopped.
Splits are drawn per material (a hash of the id and the seed), before any rotation,
so augmented copies of one crystal never straddle train and validation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice

from icsg.data.filters import FilterConfig, RejectionLog, standardise
from icsg.data.sources import Record
from icsg.errors import CrystalError, SourceError
from icsg.grid import GridSpec
from icsg.io import atomic_write_json, atomic_save_npz
from icsg.parallel import pmap
from icsg.representation.augment import (move_periodic_map, random_periodic_move, random_rotation, rotate_lengths,
                                         rotate_map)
from icsg.representation.density import coordinate_grid, encode
from icsg.representation.periodic import PeriodicGrid, coordinate_channels, encode_periodic
from icsg.representation.sites import canonical_sites

MANIFEST = "manifest.json"


def split_of(material_id: str, val_fraction: float, seed: int = 0) -> int:
    """0 = train, 1 = validation; stable across runs and machines."""
    h = hashlib.sha256(f"{seed}:{material_id}".encode()).digest()
    return int(int.from_bytes(h[:8], "big") / 2**64 < val_fraction)


def property_bin_edges(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner quantile edges (bins - 1,) of the finite values (deciles for bins = 10)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite property values to bin")
    return np.quantile(v, np.arange(1, bins) / bins)


def property_bin(values, edges: np.ndarray) -> np.ndarray:
    """Bin index 0..len(edges) per value (the condition class)."""
    return np.searchsorted(np.asarray(edges), np.asarray(values, dtype=float), side="right")


def condition_onehot(values, condition: dict) -> np.ndarray:
    """(k, n_bins) one-hot property bins; a missing value (NaN) gets the middle bin."""
    edges = np.asarray(condition["edges"])
    vals = np.asarray(values, dtype=float)
    vals = np.where(np.isfinite(vals), vals, np.median(edges))
    return np.eye(condition["n_bins"], dtype=np.float32)[property_bin(vals, edges)]


@dataclass(frozen=True)
class PrepareConfig:
    """Args:
        property: column conditioned on (bins computed on the train split); None for none.
        bins: number of property bins (10 = deciles).
        val_fraction: share of materials held out (0 for none).
        seed: split seed.
        shard_size: crystals per shard file.
    """

    property: str | None = None
    bins: int = 10
    val_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 512


def _encode_one(args):
    rec, spec, fcfg = args
    if rec.error is not None:
        return rec, None, rec.error
    try:
        if isinstance(spec, PeriodicGrid):
            e = encode_periodic(rec.structure, spec, item=rec.id)
            s, abc, angles = e.structure, e.lattice[:3], e.lattice[3:]
        else:
            s = standardise(rec.structure, rec.id, fcfg)
            e = encode(s, spec, item=rec.id)
            abc, angles = e.abc_A, np.full(3, 90.0)
        order = np.argsort([-sp.Z for sp in s.species], kind="stable")
        sites = (np.array([s[i].specie.Z for i in order]), np.mod(s.frac_coords[order], 1.0))
        return rec, (e.density, e.species.astype(np.uint8), abc, angles, sites), None
    except CrystalError as err:
        return rec, None, err


def max_sites(spec, filters: FilterConfig) -> int:
    """Length of the shards' site lists: the periodic grid's site limit, else the filters'."""
    return spec.max_sites if isinstance(spec, PeriodicGrid) else filters.max_atoms


def prepare(records: list[Record], out_dir: str | os.PathLike, spec: GridSpec | PeriodicGrid = GridSpec(),
            filters: FilterConfig = FilterConfig(), cfg: PrepareConfig = PrepareConfig(),
            workers: int | None = None, progress: bool = True, sources: list[str] | None = None) -> dict:
    """Encode ``records`` into shards under ``out_dir`` (cubic boxes for a ``GridSpec``, any lattice for a
    ``PeriodicGrid``) and write the manifest (returned)."""
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_shards = max(1, math.ceil(len(records) / cfg.shard_size))
    rejected = RejectionLog()
    shard_info, elements = [], set()
    todo = []
    for k in range(n_shards):
        path = out / "shards" / f"shard_{k:05d}.npz"
        chunk = records[k * cfg.shard_size:(k + 1) * cfg.shard_size]
        meta_path = path.with_suffix(".json")
        if path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            shard_info.append(meta)
            elements.update(meta["elements"])
            for item in meta["rejected"]:
                rejected.add(CrystalError(item["id"], item["reason"], item["detail"]))
        else:
            todo.append((k, path, chunk))
    for k, path, chunk in todo:
        dens, spc, abc, ids, splits, props, els, sites, fracs = [], [], [], [], [], [], set(), [], []
        angles, predicted, width = [], [], max_sites(spec, filters)
        local_rej = RejectionLog()
        for rec, arrays, err in pmap(_encode_one, [(r, spec, filters) for r in chunk], workers,
                                     desc=f"shard {k + 1}/{n_shards}", total=len(chunk), progress=progress):
            if err is not None:
                local_rej.add(err)
                continue
            d, s, a, ang, (zs, fr) = arrays
            dens.append(d), spc.append(s), abc.append(a), angles.append(ang), ids.append(rec.id)
            splits.append(split_of(rec.id, cfg.val_fraction, cfg.seed))
            props.append(rec.properties.get(cfg.property, np.nan) if cfg.property else np.nan)
            predicted.append(bool(cfg.property) and rec.properties.get(f"{cfg.property}_predicted", 0) == 1)
            els.update(int(z) for z in zs)
            sites.append(np.pad(zs, (0, width - len(zs))))
            fracs.append(np.pad(fr, ((0, width - len(zs)), (0, 0))))
        n = (spec.size,) * 3
        atomic_save_npz(path, density=np.array(dens, np.float32).reshape((-1,) + n),
                        species=np.array(spc, np.uint8).reshape((-1,) + n), abc_A=np.array(abc).reshape(-1, 3),
                        ids=np.array(ids, dtype=str), split=np.array(splits, np.int8), prop=np.array(props, float),
                        site_Z=np.array(sites, np.uint8).reshape(-1, width),
                        site_frac=np.array(fracs, np.float32).reshape(-1, width, 3),
                        angles_deg=np.array(angles).reshape(-1, 3), prop_predicted=np.array(predicted, bool))
        meta = {"file": path.name, "n": len(ids), "elements": sorted(els), "rejected": local_rej.items}
        atomic_write_json(path.with_suffix(".json"), meta)
        shard_info.append(meta)
        elements.update(els)
        for item in local_rej.items:
            rejected.add(CrystalError(item["id"], item["reason"], item["detail"]))
    shard_info.sort(key=lambda m: m["file"])
    manifest = _manifest(out, records, shard_info, rejected, sorted(elements), spec, filters, cfg, sources)
    manifest["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _manifest(out, records, shard_info, rejected, elements, spec, filters, cfg, sources) -> dict:
    split = np.concatenate([np.load(out / "shards" / m["file"])["split"] for m in shard_info]) if shard_info else np.array([])
    prop = np.concatenate([np.load(out / "shards" / m["file"])["prop"] for m in shard_info]) if shard_info else np.array([])
    bins = None
    if cfg.property:
        train_vals = prop[split == 0]
        if not np.isfinite(train_vals).any():
            raise SourceError(f"property '{cfg.property}' has no values in the sources")
        edges = property_bin_edges(train_vals, cfg.bins)
        predicted = np.concatenate([np.load(out / "shards" / m["file"])["prop_predicted"] for m in shard_info])
        bins = {"property": cfg.property, "n_bins": cfg.bins, "edges": edges.tolist(),
                "train_min": float(np.nanmin(train_vals)), "train_max": float(np.nanmax(train_vals)),
                "n_predicted": int(predicted.sum())}
    return {
        "format": "icsg-voxels-1",
        "encoding": "periodic" if isinstance(spec, PeriodicGrid) else "density",
        "sources": sources or [],
        "n_records": len(records),
        "n_encoded": int(len(split)),
        "n_train": int((split == 0).sum()),
        "n_val": int((split == 1).sum()),
        "rejected": rejected.to_dict(),
        "elements_Z": [int(z) for z in elements],
        "grid": spec.to_dict(),
        "filters": filters.__dict__,
        "prepare": cfg.__dict__,
        "condition": bins,
        "shards": [{"file": m["file"], "n": m["n"]} for m in shard_info],
    }


def vae_inputs(grid: dict, density: np.ndarray, arrays: dict, idx) -> np.ndarray:
    """[M, C] (k, n, n, n, 4) float32 of dataset items ``idx`` (``density`` their maps): the cubic box's
    coordinates from the cell lengths, or (a periodic grid) the f·L channels of each item's lattice."""
    if grid.get("encoding") == "periodic":
        pg = PeriodicGrid.from_dict(grid)
        coords = [coordinate_channels(Lattice.from_parameters(*arrays["abc_A"][j], *arrays["angles_deg"][j]).matrix,
                                      pg) for j in idx]
        return np.concatenate([np.asarray(density)[..., None], np.stack(coords)], -1).astype(np.float32)
    from icsg.representation.density import vae_input

    return vae_input(density, arrays["abc_A"][idx], GridSpec.from_dict(grid))


def load_manifest(path: str | os.PathLike) -> dict:
    p = Path(path)
    p = p / MANIFEST if p.is_dir() else p
    if not p.exists():
        raise SourceError(f"{p}: no dataset manifest (run 'icsg prepare' first)")
    return json.loads(p.read_text())


def load_arrays(path: str | os.PathLike, split: str | None = None) -> dict:
    """All shards of a dataset in memory, optionally one split ('train' or 'val')."""
    root = Path(path)
    man = load_manifest(root)
    parts = [np.load(root / "shards" / m["file"]) for m in man["shards"] if m["n"] > 0]
    keys = ("density", "species", "abc_A", "ids", "split", "prop", "site_Z", "site_frac", "angles_deg",
            "prop_predicted")
    arrays = {k: np.concatenate([p[k] for p in parts]) if parts else np.array([]) for k in keys
              if all(k in p.files for p in parts)}
    if split is not None:
        keep = arrays["split"] == {"train": 0, "val": 1}[split]
        arrays = {k: v[keep] for k, v in arrays.items()}
    arrays["manifest"] = man
    return arrays


def site_counts(site_Z: np.ndarray, elements_Z: list[int]) -> np.ndarray:
    """(k, max_atoms) 0-padded site Z -> (k, E) number of sites of each element of ``elements_Z``."""
    site_Z = np.asarray(site_Z)
    return np.stack([(site_Z == z).sum(1) for z in elements_Z], axis=1).astype(np.int32)


def species_classes(elements_Z: list[int]) -> np.ndarray:
    """Lookup table Z -> class index (0 = background, 1..K in order of Z)."""
    table = np.zeros(256, dtype=np.int64)
    for k, z in enumerate(sorted(elements_Z), start=1):
        table[z] = k
    return table


def _keras_pydataset():
    import icsg  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
    import keras

    return keras.utils.PyDataset


class VoxelDataset(_keras_pydataset()):
    """Batches of an encoded dataset for Keras ``fit``, with exact random rotations.

    Periodic datasets (any lattice) are augmented by inversion and whole-voxel translations of the origin
    (``icsg.representation.augment.PeriodicMove``) instead of rotations; their readout cell has six numbers.

    task='unet':  x = M (B, n, n, n, 1); y = {'species': class index (B, n, n, n),
                  'occupancy': S_B (B, n, n, n, 1)}. With ``crop`` = c, a random c^3 window of
                  each map instead (the UNet is fully convolutional, so windows cost less per
                  map and still run on full maps at inference; they learnt worse than whole
                  maps, see ``icsg.training.maps.train_unet``).
    task='vae':   x = (concat[M, C] (B, n, n, n, 4), one-hot condition (B, bins)); y = the 4 channels.
    task='readout': x = (site Z (B, max_atoms) 0-padded, fractional coordinates (B, max_atoms, 3), cell
                  lengths (B, 3) Å, followed on periodic datasets by the angles (B, 3) °), no maps; y = {'counts':
                  sites per element of the manifest's elements_Z (B, E), 'abc_A': (B, 3) Å, 'property': (B,)
                  NaN where unknown, periodic: 'angles_deg' (B, 3)} (``icsg.models.readout``).
    """

    def __init__(self, path, split: str = "train", task: str = "unet", batch_size: int = 8,
                 augment: bool = True, shuffle: bool = True, seed: int = 0, limit: int | None = None,
                 crop: int | None = None, epoch_steps: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if task not in ("unet", "vae", "readout"):
            raise ValueError(f"task must be 'unet', 'vae' or 'readout', got {task!r}")
        self.arrays = load_arrays(path, split)
        man = self.arrays["manifest"]
        if limit is not None:
            self.arrays = {k: (v[:limit] if isinstance(v, np.ndarray) else v) for k, v in self.arrays.items()}
        self.periodic = man.get("encoding") == "periodic"
        self.grid = (PeriodicGrid if self.periodic else GridSpec).from_dict(man["grid"])
        self.classes = species_classes(man["elements_Z"])
        self.n_classes = len(man["elements_Z"]) + 1
        self.condition = man.get("condition")
        self.task, self.batch_size, self.augment, self.shuffle = task, batch_size, augment, shuffle
        if crop is not None and (task != "unet" or not 4 <= crop <= self.grid.size):
            raise ValueError(f"crop must be in [4, {self.grid.size}] and only for task='unet'")
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self.n = len(self.arrays["ids"])
        if self.n == 0:
            raise SourceError(f"{path}: split '{split}' is empty")
        if task == "vae" and not self.condition:
            raise SourceError(f"{path}: dataset was prepared without --property; the VAE needs a condition")
        if task == "readout":
            if "site_Z" not in self.arrays:
                raise SourceError(f"{path}: dataset has no site lists (prepared by an older icsg); run 'icsg prepare' "
                                  "again into a new folder")
            self.counts = site_counts(self.arrays["site_Z"], man["elements_Z"])
        # Samples are drawn from an endless stream of shuffled passes over the split, so an
        # "epoch" of ``epoch_steps`` batches (a checkpoint interval on a CPU) can be shorter
        # than one pass without the data running out mid-training.
        self.epoch_steps = epoch_steps
        self._stream = np.zeros(0, dtype=np.int64)
        self._start = 0

    def __len__(self) -> int:
        return self.epoch_steps or math.ceil(self.n / self.batch_size)

    def _indices(self, i: int) -> np.ndarray:
        if not self.shuffle and not self.epoch_steps:
            return np.arange(i * self.batch_size, min(self.n, (i + 1) * self.batch_size))
        lo = self._start + i * self.batch_size
        hi = lo + self.batch_size
        while len(self._stream) < hi:
            perm = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            self._stream = np.concatenate([self._stream, perm])
        return self._stream[lo:hi]

    def on_epoch_end(self) -> None:
        self._start += len(self) * self.batch_size

    def condition_onehot(self, idx: np.ndarray) -> np.ndarray:
        edges = np.array(self.condition["edges"])
        b = property_bin(self.arrays["prop"][idx], edges)
        return np.eye(self.condition["n_bins"], dtype=np.float32)[b]

    def __getitem__(self, i: int):
        idx = self._indices(i)
        if self.task == "readout":
            abc = self.arrays["abc_A"][idx].astype(np.float32)
            zs, fr = canonical_sites(self.arrays["site_Z"][idx].astype(np.int32), self.arrays["site_frac"][idx])
            y = {"counts": self.counts[idx], "abc_A": abc, "property": self.arrays["prop"][idx].astype(np.float32)}
            if not self.periodic:
                return (zs, fr, abc), y
            angles = self.arrays["angles_deg"][idx].astype(np.float32)
            return (zs, fr, np.concatenate([abc, angles], -1)), {**y, "angles_deg": angles}
        dens, spc, coords = [], [], []
        for j in idx:
            d, s, abc = self.arrays["density"][j], self.arrays["species"][j], self.arrays["abc_A"][j]
            if self.periodic:  # any lattice: the cell stays, the origin moves (and the hand, by inversion)
                if self.augment:
                    move = random_periodic_move(self.rng, self.grid.size)
                    d, s = move_periodic_map(d, move), move_periodic_map(s, move)
                dens.append(d)
                spc.append(s)
                if self.task == "vae":
                    lat = Lattice.from_parameters(*abc, *self.arrays["angles_deg"][j])
                    coords.append(coordinate_channels(lat.matrix, self.grid))
                continue
            if self.augment:
                rot = random_rotation(self.rng)
                d, s, abc = rotate_map(d, rot), rotate_map(s, rot), rotate_lengths(abc, rot)
            dens.append(d)
            spc.append(s)
            if self.task == "vae":
                coords.append(coordinate_grid(abc, self.grid))
        if self.crop is not None and self.crop < self.grid.size:
            hi = self.grid.size - self.crop + 1
            for k in range(len(dens)):
                o = self.rng.integers(0, hi, size=3)
                window = tuple(slice(a, a + self.crop) for a in o)
                dens[k], spc[k] = dens[k][window], spc[k][window]
        m = np.stack(dens)[..., None].astype(np.float32)
        if self.task == "unet":
            s = np.stack(spc)
            return m, {"species": self.classes[s], "occupancy": (s > 0).astype(np.float32)[..., None]}
        x = np.concatenate([m, np.stack(coords)], axis=-1)
        return (x, self.condition_onehot(idx)), x
