"""Training loops shared by the Keras models: checkpoints, resume, early stopping, logs, plots.

Every run folder holds::

    last.weights.h5     weights after the latest epoch     } resume from these
    last_optimizer.npz  Adam state after the latest epoch  }
    best.weights.h5     weights with the lowest validation loss so far (what gets shipped)
    model.json          the model config and everything needed to rebuild it
    state.json          epochs done, best validation loss, wall time per epoch
    log.csv, loss.png   per-epoch metrics and their plot
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import icsg  # noqa: F401
import keras

from icsg.io import atomic_path, atomic_write_json


class _Checkpoint(keras.callbacks.Callback):
    """After each epoch: last weights + Adam state, best.weights.h5, state.json, loss.png (all atomic)."""

    def __init__(self, out: Path, state: dict, monitor: str = "val_loss"):
        super().__init__()
        self.out, self.state, self.monitor = out, state, monitor
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._t0
        value = float(logs.get(self.monitor, logs.get("loss", np.inf)))
        with atomic_path(self.out / "last.weights.h5", suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        opt = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.optimizer.variables)}
        with atomic_path(self.out / "last_optimizer.npz", suffix=".npz") as tmp:
            np.savez(tmp, **opt)
        if value < self.state.get("best", np.inf):
            self.state["best"] = value
            self.state["best_epoch"] = epoch + 1
            with atomic_path(self.out / "best.weights.h5", suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        self.state["epochs_done"] = epoch + 1
        self.state.setdefault("epoch_seconds", []).append(seconds)
        self.state["last_logs"] = {k: float(v) for k, v in logs.items()}
        atomic_write_json(self.out / "state.json", self.state)
        plot_log(self.out / "log.csv", self.out / "loss.png")


def plot_log(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    if not Path(csv_path).exists():
        return
    df = pd.read_csv(csv_path)
    if df.empty:
        return
    keys = [c for c in df.columns if c.endswith("loss") and not c.startswith("val_")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        ax.plot(df["epoch"] + 1, df[k], label=k)
        if f"val_{k}" in df:
            ax.plot(df["epoch"] + 1, df[f"val_{k}"], "--", label=f"val_{k}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def fit(model_factory, train_ds, val_ds, out_dir, *, epochs: int, steps_per_epoch: int | None,
        resume: bool, patience: int, meta: dict, seed: int, verbose: int = 2, init_weights=None,
        resume_lr: float | None = None, init_partial: bool = False) -> dict:
    """Train with checkpoints; ``model_factory()`` builds and compiles a fresh model.

    ``init_partial``: ``init_weights`` may lack layers of the model (a new head beside trained parts); those
    keep their fresh initialisation.

    A resumed run continues with the Adam state it saved, learning rate included; ``resume_lr`` replaces
    that rate (a second, slower stage of the same run). The run's origin (the command that started it,
    ``--init-weights`` and its checksum) survives resumes, which are listed in ``meta['resumed']``, so
    shipping still recognises the warm start.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    state_path = out / "state.json"
    state = {"meta": meta}
    model = model_factory()
    command = " ".join(["icsg"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("icsg") else None
    if resume and (out / "last.weights.h5").exists() and state_path.exists():
        state = json.loads(state_path.read_text())
        model.load_weights(out / "last.weights.h5")
        _restore_optimizer(model, out / "last_optimizer.npz")
        initial_epoch = int(state.get("epochs_done", 0))
        if resume_lr is not None:
            model.optimizer.learning_rate = resume_lr
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        started = json.loads((out / "model.json").read_text()) if (out / "model.json").exists() else {}
        for k in ("init_weights", "init_weights_sha256", "command"):
            if k in started:
                meta[k] = started[k]
        meta["resumed"] = list(started.get("resumed", [])) + [
            {"at_epoch": initial_epoch, "lr": lr, "command": command}]
        print(f"resuming {out} from epoch {initial_epoch} at learning rate {lr:g}", flush=True)
    else:
        if (out / "last.weights.h5").exists() and not resume:
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        if init_weights is not None:  # warm start, e.g. from the shipped weights on a fresh machine
            model.load_weights(init_weights, skip_mismatch=init_partial)
            meta["init_weights"] = str(init_weights)
            from icsg.pretrained import sha256

            meta["init_weights_sha256"] = sha256(init_weights)  # what shipping compares (icsg.pretrained.warm_start)
            print(f"initialised from {init_weights}", flush=True)
        initial_epoch = 0
        for f in ("log.csv",):
            (out / f).unlink(missing_ok=True)
    meta.setdefault("command", command)
    atomic_write_json(out / "model.json", meta)
    if initial_epoch >= epochs:
        print(f"{out}: already trained for {initial_epoch} epochs", flush=True)
        return state
    callbacks = [
        keras.callbacks.CSVLogger(str(out / "log.csv"), append=True),
        _Checkpoint(out, state),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, verbose=1),
    ]
    if steps_per_epoch:
        train_ds.epoch_steps = steps_per_epoch  # the dataset streams shuffled passes; see VoxelDataset
        train_ds._start = initial_epoch * steps_per_epoch * train_ds.batch_size
    t0 = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, verbose=verbose)
    state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.perf_counter() - t0
    atomic_write_json(state_path, state)
    return state


def _restore_optimizer(model, path: Path) -> None:
    if not path.exists():
        return
    model.optimizer.build(model.trainable_variables)
    saved = np.load(path)
    variables = model.optimizer.variables
    if len(saved.files) != len(variables):
        print(f"{path}: optimizer state does not fit this model; starting Adam afresh", flush=True)
        return
    for i, v in enumerate(variables):
        v.assign(saved[f"v{i}"])


def voxel_class_counts(species: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxels per class over a stack of species maps (Z per voxel)."""
    z_counts = np.bincount(species.reshape(-1), minlength=256)
    out = np.zeros(n_classes, dtype=np.int64)
    for z, c in enumerate(z_counts):
        if c:
            out[classes[z]] += c
    return out


def steps_for(n: int, batch: int) -> int:
    return max(1, math.ceil(n / batch))
