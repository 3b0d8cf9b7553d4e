"""``icsg train-imatgen``: image cache -> cell AE -> basis AE -> crystal codes -> materials VAE.

Run folder::

    images_{train,val}.npz         cached iMatGen images (float16), slot elements, property
    cell/, basis/, mvae/           one training run each (icsg.training.loop.fit: checkpoints, resume, logs)
    codes.npz                      standardised crystal codes of train and val (for the GAN)
    imatgen.json                   config, code statistics, property, timings  } the product, shipped
    imatgen_{cell,basis,mvae}.weights.h5                                        } as weights/imatgen*
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import icsg  # noqa: F401
import keras

from icsg.data.sources import iter_source
from icsg.errors import CrystalError, SourceError
from icsg.models.crystal_code import CodeStats, CrystalCodec, crystal_images
from icsg.io import atomic_copy, atomic_save_npz, atomic_write_json
from icsg.models.imatgen import (ImatgenModelConfig, build_basis_autoencoder, build_cell_autoencoder,
                                 build_materials_vae)
from icsg.parallel import pmap
from icsg.training.loop import fit

PARTS = ("cell", "basis", "mvae")


class ArrayDataset(keras.utils.PyDataset):
    """In-memory (x, y) batches, shuffled, streaming like ``VoxelDataset`` (``epoch_steps``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 32, shuffle: bool = True,
                 seed: int = 0, transform=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.transform = transform
        self.rng = np.random.default_rng(seed)
        self.n = len(x)
        self.epoch_steps = None
        self._stream = np.zeros(0, dtype=np.int64)
        self._start = 0

    def __len__(self) -> int:
        return self.epoch_steps or int(np.ceil(self.n / self.batch_size))

    def __getitem__(self, i: int):
        if self.shuffle or self.epoch_steps:
            lo = self._start + i * self.batch_size
            while len(self._stream) < lo + self.batch_size:
                perm = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
                self._stream = np.concatenate([self._stream, perm])
            idx = self._stream[lo:lo + self.batch_size]
        else:
            idx = np.arange(i * self.batch_size, min(self.n, (i + 1) * self.batch_size))
        x = self.x[idx].astype(np.float32)
        if self.transform is not None:
            x = self.transform(x, self.rng)
        y = x if self.y is None else self.y[idx].astype(np.float32)
        return x, y

    def on_epoch_end(self) -> None:
        self._start += len(self) * self.batch_size


def _images_one(args):
    rec, cfg, prop = args
    if rec.error is not None:
        return rec.id, None, rec.error
    try:
        cell, basis, slot_z = crystal_images(rec.structure, cfg, rec.id)
    except CrystalError as err:
        return rec.id, None, err
    return rec.id, (cell.astype(np.float16), basis.astype(np.float16), slot_z,
                    float(rec.properties.get(prop, np.nan))), None


def build_image_cache(source: str, out_npz: Path, cfg: ImatgenModelConfig, prop: str, limit: int | None = None,
                      workers: int | None = None) -> dict:
    """iMatGen images of ``source`` (first ``limit`` crystals); rejected crystals counted by reason."""
    out_npz = Path(out_npz)
    if out_npz.exists():
        return dict(np.load(out_npz, allow_pickle=False))
    recs = []
    for rec in iter_source(source):
        recs.append(rec)
        if limit is not None and len(recs) >= limit:
            break
    rows, rejected = [], {}
    for rid, arrays, err in pmap(_images_one, [(r, cfg, prop) for r in recs], workers=workers,
                                 total=len(recs), desc=f"imatgen images {Path(source).name}"):
        if arrays is None:
            rejected[err.reason] = rejected.get(err.reason, 0) + 1
        else:
            rows.append((rid, arrays))
    if not rows:
        raise SourceError(f"{source}: no crystal could be encoded ({rejected})")
    data = {"ids": np.array([r for r, _ in rows]), "cell": np.stack([a[0] for _, a in rows]),
            "basis": np.stack([a[1] for _, a in rows]), "slot_z": np.stack([a[2] for _, a in rows]),
            "prop": np.array([a[3] for _, a in rows]), "rejected": np.array(json.dumps(rejected))}
    atomic_save_npz(out_npz, **data)
    return data


def _bce_model(builder, cfg: ImatgenModelConfig, lr: float):
    def factory():
        _, _, ae = builder(cfg)
        ae.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.BinaryCrossentropy())
        return ae
    return factory


def _permute_axes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random axis permutation of cell images: the cell image of a permuted lattice (exact)."""
    return np.transpose(x, (0,) + tuple(1 + rng.permutation(3)) + (4,))


def train_imatgen(train_source: str, val_source: str, out_dir, cfg: ImatgenModelConfig = ImatgenModelConfig(),
                  prop: str = "heat_ref", limit: int | None = None, val_limit: int | None = 1000,
                  epochs_ae: int = 6, epochs_vae: int = 200, steps_per_epoch: int = 200, batch: int = 32,
                  lr: float = 1e-3, resume: bool = False, seed: int = 0, workers: int | None = None,
                  verbose: int = 2) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tr = build_image_cache(train_source, out / "images_train.npz", cfg, prop, limit, workers)
    va = build_image_cache(val_source, out / "images_val.npz", cfg, prop, val_limit, workers)
    images_seconds = time.perf_counter() - t0
    meta = {"config": cfg.to_dict(), "property": prop, "train_source": str(train_source),
            "val_source": str(val_source), "n_train": int(len(tr["ids"])), "n_val": int(len(va["ids"]))}

    def stage(name, factory, train_ds, val_ds, epochs, steps):
        run = out / name
        done = run / "state.json"
        if done.exists() and json.loads(done.read_text()).get("epochs_done", 0) >= epochs:
            return json.loads(done.read_text())
        return fit(factory, train_ds, val_ds, run, epochs=epochs, steps_per_epoch=steps, patience=10,
                   resume=resume or (run / "last.weights.h5").exists(), meta={**meta, "part": name}, seed=seed,
                   verbose=verbose)

    cells_tr, cells_va = tr["cell"][..., None], va["cell"][..., None]
    stage("cell", _bce_model(build_cell_autoencoder, cfg, lr),
          ArrayDataset(cells_tr, batch_size=batch, seed=seed, transform=_permute_axes),
          ArrayDataset(cells_va, batch_size=batch, shuffle=False), epochs_ae, steps_per_epoch)
    present_tr = tr["basis"][tr["slot_z"] > 0][..., None]
    present_va = va["basis"][va["slot_z"] > 0][..., None]
    stage("basis", _bce_model(build_basis_autoencoder, cfg, lr),
          ArrayDataset(present_tr, batch_size=batch, seed=seed),
          ArrayDataset(present_va[:512], batch_size=batch, shuffle=False), epochs_ae, steps_per_epoch)

    codec = codec_from_runs(out, cfg, CodeStats.for_elements(np.unique(tr["slot_z"])))
    raw_tr = codec.raw_codes(tr["cell"], tr["basis"], tr["slot_z"])
    codec.fit_standardisation(raw_tr)
    codes_tr = codec.standardise(raw_tr)
    codes_va = codec.encode(va["cell"], va["basis"], va["slot_z"])
    finite = np.isfinite(tr["prop"])
    median = float(np.median(tr["prop"][finite])) if finite.any() else 0.0
    label_tr = (tr["prop"] < median).astype(np.float32)[:, None]
    label_va = (va["prop"] < median).astype(np.float32)[:, None]
    atomic_save_npz(out / "codes.npz", train=codes_tr, val=codes_va, prop_train=tr["prop"], prop_val=va["prop"])

    def mvae_factory():
        m = build_materials_vae(cfg)
        m.compile(optimizer=keras.optimizers.Adam(lr))
        return m

    stage("mvae", mvae_factory,
          ArrayDataset(codes_tr, np.concatenate([codes_tr, label_tr], 1), batch_size=128, seed=seed),
          ArrayDataset(codes_va, np.concatenate([codes_va, label_va], 1), batch_size=256, shuffle=False),
          epochs_vae, None)
    for part in PARTS:
        atomic_copy(out / part / "best.weights.h5", out / f"imatgen_{part}.weights.h5")
    states = {p: json.loads((out / p / "state.json").read_text()) for p in PARTS}
    seconds = {f"{p}_seconds": float(states[p].get("wall_seconds", 0.0)) for p in PARTS}
    # kept in the shipped description: the model card must not depend on runs/, which is not kept
    training = {p: {k: states[p].get(k) for k in ("epochs_done", "best", "last_logs")} for p in PARTS}
    meta.update(command=" ".join(["icsg"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("icsg") else None)
    meta.update(kind="imatgen", stats=codec.stats.to_dict(), median=median,
                rejected={"train": json.loads(str(tr["rejected"])), "val": json.loads(str(va["rejected"]))},
                train_seconds=seconds, images_seconds=images_seconds, training=training)
    atomic_write_json(out / "imatgen.json", meta)
    return meta


def codec_from_runs(out: Path, cfg: ImatgenModelConfig, stats: CodeStats) -> CrystalCodec:
    cell, basis = build_cell_autoencoder(cfg), build_basis_autoencoder(cfg)
    cell[2].load_weights(out / "cell" / "best.weights.h5")
    basis[2].load_weights(out / "basis" / "best.weights.h5")
    return CrystalCodec(cfg, cell, basis, stats)


def load_imatgen(location) -> tuple[CrystalCodec, object, dict]:
    """(codec, materials VAE, meta) from a run folder or a weights folder (imatgen.json + 3 weight files)."""
    from icsg.pretrained import load_weights_file, read_description

    loc = Path(location)
    meta = read_description(loc / "imatgen.json", "train with 'icsg train-imatgen'")
    cfg = ImatgenModelConfig.from_dict(meta["config"])
    cell, basis, mvae = build_cell_autoencoder(cfg), build_basis_autoencoder(cfg), build_materials_vae(cfg)
    for part, model in (("cell", cell[2]), ("basis", basis[2]), ("mvae", mvae)):
        load_weights_file(model, loc / f"imatgen_{part}.weights.h5")
    return CrystalCodec(cfg, cell, basis, CodeStats.from_dict(meta["stats"])), mvae, meta


def ship_imatgen(run, weights_dir) -> list[Path]:
    """Copy the product of a run (imatgen.json + 3 weight files) into ``weights_dir`` atomically."""
    run, dst = Path(run), Path(weights_dir)
    files = ["imatgen.json"] + [f"imatgen_{p}.weights.h5" for p in PARTS]
    out = []
    for f in files:
        atomic_copy(run / f, dst / f)
        out.append(dst / f)
    return out


def run_cli(a) -> int:
    cfg = ImatgenModelConfig(box_A=a.box, latent_dim=a.latent, beta=a.beta)
    meta = train_imatgen(a.train, a.val, a.out, cfg, a.property, a.limit, a.val_limit, a.epochs_ae, a.epochs_vae,
                         a.steps_per_epoch, a.batch, resume=a.resume, seed=a.seed, workers=a.workers,
                         verbose=0 if a.quiet else 2)
    print(f"iMatGen model in {a.out} ({meta['n_train']} training crystals)")
    if a.ship:
        print("shipped", [str(p) for p in ship_imatgen(a.out, a.ship)])
    return 0
