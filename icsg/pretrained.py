"""Loading trained models: from a training run folder or from the shipped ``weights/``.

A model is two files: ``NAME.json`` (config, element classes, grid, condition bins)
and ``NAME.weights.h5`` (Keras weights, HDF5: no pickle, no code). The model is
rebuilt from the config by the same function that trained it, then the weights are
loaded; a missing, truncated or mismatched file raises ``WeightsError`` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import icsg  # noqa: F401
from icsg.errors import WeightsError



def shipped_weights_dir() -> Path:
    """Where the shipped weights are: $ICSG_WEIGHTS if set; else ``weights/`` beside the package in a checkout
    (an editable install); else ``<prefix>/share/icsg/weights``, where ``pip install .`` puts them
    (setup.cfg ``[options.data_files]``)."""
    import sysconfig

    if os.environ.get("ICSG_WEIGHTS"):
        return Path(os.environ["ICSG_WEIGHTS"])
    checkout = Path(__file__).resolve().parent.parent / "weights"
    if (checkout / "vae.json").exists():
        return checkout
    for prefix in (sysconfig.get_paths()["data"], sys.prefix, sys.base_prefix):
        installed = Path(prefix) / "share" / "icsg" / "weights"
        if (installed / "vae.json").exists():
            return installed
    return checkout  # not found: loading names this folder in its error


WEIGHTS_DIR = shipped_weights_dir()


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pair(location: str | os.PathLike, name: str) -> tuple[dict, Path]:
    """(meta, weights path) from a run folder (model.json + best.weights.h5) or weights/NAME.*"""
    loc = Path(location)
    if loc.is_dir() and (loc / "model.json").exists():
        meta_path, w = loc / "model.json", loc / "best.weights.h5"
    elif loc.is_dir():
        meta_path, w = loc / f"{name}.json", loc / f"{name}.weights.h5"
    else:
        meta_path, w = loc.with_suffix("").with_suffix(".json"), loc
    meta = read_description(meta_path, "expected beside the weights")
    if not w.exists():
        raise WeightsError(f"{w}: weights file missing")
    return meta, w


def load_weights_file(model, path: Path) -> None:
    """Keras weights into ``model``, or WeightsError naming the missing, truncated or mismatched file."""
    if not Path(path).exists():
        raise WeightsError(f"{path}: weights file missing")
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py OSError on truncation, ValueError on shape mismatch
        raise WeightsError(f"{path}: cannot load weights ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_description(path: str | os.PathLike, how_to_make: str) -> dict:
    """A model's JSON description, or WeightsError naming the file (and how to make it, if missing)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: model description missing ({how_to_make})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc})") from None


def is_periodic(location: str | os.PathLike) -> bool:
    """Whether the VAE of a weights or run folder reads periodic maps (any lattice)."""
    loc = Path(location)
    path = loc / "model.json" if (loc / "model.json").exists() else loc / "vae.json"
    return path.exists() and bool(json.loads(path.read_text()).get("config", {}).get("periodic"))


def has_readout(location: str | os.PathLike) -> bool:
    """Whether a weights folder holds a readout (``readout.json``): periodic folders then read codes, not maps."""
    return (Path(location) / "readout.json").exists()


def load_unet(location: str | os.PathLike = WEIGHTS_DIR):
    """(keras UNet, meta). ``meta['elements_Z']`` maps class k to Z = elements_Z[k-1]."""
    from icsg.models.unet import UNetConfig, build_unet

    meta, w = _pair(location, "unet")
    model = build_unet(UNetConfig(**meta["config"]))
    load_weights_file(model, w)
    return model, meta


def load_vae(location: str | os.PathLike = WEIGHTS_DIR, unet=None):
    """(Cond-DFC-VAE, meta). The UNet features are attached only if ``unet`` is given (training)."""
    from icsg.models.unet import feature_extractor
    from icsg.models.vae import VAEConfig, build_vae

    meta, w = _pair(location, "vae")
    model = build_vae(VAEConfig.from_dict(meta["config"]), feature_extractor(unet) if unet is not None else None)
    load_weights_file(model, w)
    return model, meta


def load_readout(location: str | os.PathLike = WEIGHTS_DIR):
    """(readout encoder + heads, meta) (``icsg.models.readout``): the code's composition, cell and property."""
    from icsg.models.readout import ReadoutConfig, build_readout

    meta, w = _pair(location, "readout")
    model = build_readout(ReadoutConfig.from_dict(meta["config"]))
    load_weights_file(model, w)
    return model, meta


@dataclass
class Pretrained:
    unet: object
    unet_meta: dict
    vae: object
    vae_meta: dict


def load_ccdcgan(location):
    """(generator, regressor, meta) from a run or weights folder (ccdcgan.json + two weight files)."""
    from icsg.models.ccdcgan import CCDCGANConfig, build_generator, build_regressor

    loc = Path(location)
    meta = read_description(loc / "ccdcgan.json", "train with 'icsg train-ccdcgan'")
    cfg = CCDCGANConfig.from_dict(meta["config"])
    gen, reg = build_generator(cfg), build_regressor(cfg)
    for name, model in (("ccdcgan_generator", gen), ("ccdcgan_regressor", reg)):
        load_weights_file(model, loc / f"{name}.weights.h5")
    return gen, reg, meta


def load_pretrained(weights_dir: str | os.PathLike = WEIGHTS_DIR) -> Pretrained:
    """The shipped UNet and Cond-DFC-VAE, offline."""
    unet, um = load_unet(weights_dir)
    vae, vm = load_vae(weights_dir)
    return Pretrained(unet, um, vae, vm)


def ship_run(run: str | os.PathLike, name: str, weights_dir: str | os.PathLike = WEIGHTS_DIR,
             recalibrate_data: str | os.PathLike | None = None, n_recalibrate: int = 256, seed: int = 0) -> Path:
    """Copy a Keras training run's best weights and description to ``weights_dir/NAME.*`` (atomically).

    With ``recalibrate_data`` (a prepared dataset), the BatchNorm statistics of the UNet or the VAE are first
    recomputed on ``n_recalibrate`` whole training maps (``icsg.models.batchnorm``). A new VAE or readout
    changes the codes: refit the priors afterwards (``icsg fit-latent-prior DATA``).
    """
    import numpy as np

    from icsg.io import atomic_copy, atomic_write_json

    run = Path(run)
    meta, w = _pair(run, name)
    if recalibrate_data is not None and name in ("unet", "vae"):  # the readout trains on whole maps already
        from icsg.data.dataset import condition_onehot, load_arrays, vae_inputs
        from icsg.models import batchnorm

        arrays = load_arrays(recalibrate_data, "train")
        pick = np.random.default_rng(seed).permutation(len(arrays["ids"]))[:n_recalibrate]
        dens = arrays["density"][pick]
        if name == "unet":
            model, _ = load_unet(run)
            crop = meta.get("crop")
            if crop:  # trained on windows: its statistics belong to windows (whole maps measured worse)
                rng = np.random.default_rng(seed)
                n = dens.shape[1]
                starts = rng.integers(0, n - crop + 1, size=(len(dens), 3))
                dens = np.stack([d[a:a + crop, b:b + crop, c:c + crop] for d, (a, b, c) in zip(dens, starts)])
            k = batchnorm.recalibrate_unet(model, dens)
        else:
            model, _ = load_vae(run)
            x = vae_inputs(meta["grid"], dens, arrays, pick)
            k = batchnorm.recalibrate_vae(model, x, condition_onehot(arrays["prop"][pick], meta["condition"]))
        meta["bn_recalibrated"] = {"data": str(recalibrate_data), "maps": int(len(pick)), "layers": k}
        tmp_dir = run / ".recalibrated"
        tmp_dir.mkdir(exist_ok=True)
        w = tmp_dir / "best.weights.h5"
        model.save_weights(w)
    state_path = run / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        meta["training"] = {k: state.get(k) for k in ("epochs_done", "best", "best_epoch", "epoch_seconds",
                                                       "last_logs", "wall_seconds")}
    dest = Path(weights_dir) / f"{name}.weights.h5"
    prev_path = Path(weights_dir) / f"{name}.json"
    if prev_path.exists():
        prev = json.loads(prev_path.read_text())
        meta.update(warm_start(meta, prev, run, dest))
        if (name == "readout" and meta.get("train_only") and "encoder" not in meta["train_only"]
                and meta.get("init_weights_sha256") == prev.get("sha256")):
            # new heads on the shipped encoder: the codes, and the priors fitted to them, stay valid
            meta.update({k: prev[k] for k in ("latent_prior", "latent_cell") if k in prev})
    atomic_copy(w, dest)
    meta["sha256"] = sha256(dest)
    meta["source_run"] = str(run)
    atomic_write_json(Path(weights_dir) / f"{name}.json", meta)
    return dest


def warm_start(meta: dict, prev: dict, run: Path, dest: Path) -> dict:
    """The cost of the runs a warm-started run continued, carried over from the model it replaces.

    A run started with ``--init-weights`` from the shipped file it now overwrites (same sha256; for runs
    recorded before the checksum, same path) inherits that model's wall time (its own epochs plus its own
    warm start) and run chain (``warm_start_chain``), so the model card
    and the generator comparison count the whole training cost. Re-shipping the same run keeps
    the record it had. Returns the keys to set (none for a run trained from scratch).
    """
    if Path(prev.get("source_run", "")).name == run.name:  # the same run shipped again
        return {k: prev[k] for k in ("warm_start_seconds", "warm_start_note", "warm_start_chain") if k in prev}
    init = meta.get("init_weights")
    if not init:
        return {}
    if meta.get("init_weights_sha256"):  # the file it started from, wherever training and shipping ran
        if meta["init_weights_sha256"] != prev.get("sha256"):
            return {}
    elif Path(init).resolve() != dest.resolve():  # runs from before the checksum: a path from where training ran
        return {}
    chain = list(prev.get("warm_start_chain") or _chain_of_note(prev.get("warm_start_note", "")))
    chain.append(Path(prev.get("source_run", "?")).name)
    own = sum((prev.get("training") or {}).get("epoch_seconds") or [])
    return {"warm_start_seconds": float(prev.get("warm_start_seconds", 0.0)) + float(own),
            "warm_start_chain": chain,
            "warm_start_note": "wall time of the earlier runs this one was warm-started from "
                               f"(--init-weights chain: {', '.join(chain)})"}


def _chain_of_note(note: str) -> list[str]:
    """The run chain of descriptions written before ``warm_start_chain`` existed (it was only in the note)."""
    return note.split("chain: ")[-1].rstrip(")").split(", ") if "chain: " in note else []


def register_cli(sub) -> None:
    p = sub.add_parser("ship-weights", help="copy a training run's best weights into the weights folder",
                       description="Copy RUN/best.weights.h5 and RUN/model.json to WEIGHTS/NAME.weights.h5 and "
                                   "WEIGHTS/NAME.json, with the training state and the sha256.")
    p.add_argument("run", help="training run folder")
    p.add_argument("--name", required=True, choices=["unet", "vae", "readout"], help="model name in the weights folder")
    p.add_argument("--to", default=str(WEIGHTS_DIR), help="weights folder (default: the package's weights/)")
    p.add_argument("--recalibrate", default=None, metavar="DATA",
                   help="recompute BatchNorm statistics on whole maps of this prepared dataset before shipping")
    p.add_argument("--maps", type=int, default=256, help="training maps for --recalibrate (default 256)")
    p.set_defaults(func=lambda a: print("shipped", ship_run(a.run, a.name, a.to, a.recalibrate, a.maps)) or 0)
