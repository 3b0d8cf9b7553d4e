"""``icsg train-unet`` and ``icsg train-vae``: wiring of data, model, loss and the shared loop."""

from __future__ import annotations

from pathlib import Path


import icsg  # noqa: F401
import keras

from icsg.data.dataset import VoxelDataset
from icsg.models.losses import NonzeroRecall, WeightedSpeciesCrossEntropy, class_weights
from icsg.models.unet import UNetConfig, build_unet
from icsg.training.config import TrainConfig
from icsg.training.loop import fit, voxel_class_counts


def train_unet(data_dir, out_dir, model_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
               resume: bool = False, limit: int | None = None, verbose: int = 2, crop: int | None = None,
               init_weights=None, occupancy_weight: float = 1.0, resume_lr: float | None = None) -> dict:
    """UNet on whole maps (default) or random ``crop``^3 windows; validation always on whole maps.

    Whole maps are the default: a 16^3 window of a perovskite holds about one atom, so a UNet trained on
    windows learns species with little context and BatchNorm statistics of windows, at no less cost per voxel.
    """
    train = VoxelDataset(data_dir, "train", "unet", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit,
                         crop=crop)
    val = VoxelDataset(data_dir, "val", "unet", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    ucfg = UNetConfig(n_classes=train.n_classes, grid_size=train.grid.size,
                      **({"periodic": train.periodic} | (model_cfg or {})))
    counts = voxel_class_counts(train.arrays["species"], train.classes, train.n_classes)
    weights = class_weights(counts)
    man = train.arrays["manifest"]
    meta = {"kind": "unet", "config": ucfg.to_dict(), "elements_Z": man["elements_Z"], "grid": man["grid"],
            "class_weights": weights.tolist(), "data": str(data_dir), "train": cfg.__dict__,
            "n_train": train.n, "n_val": val.n, "crop": crop,
            "occupancy_weight": occupancy_weight}

    def factory():
        model = build_unet(ucfg)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.lr),
            loss={"species": WeightedSpeciesCrossEntropy(weights), "occupancy": keras.losses.BinaryCrossentropy()},
            loss_weights={"species": 1.0, "occupancy": occupancy_weight},
            metrics={"species": [NonzeroRecall()]},
        )
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr)


def train_vae(data_dir, out_dir, unet_location, vae_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
              resume: bool = False, limit: int | None = None, verbose: int = 2, init_weights=None,
              resume_lr: float | None = None) -> dict:
    """Cond-DFC-VAE on a prepared dataset; ``unet_location`` = trained UNet (run folder or weights/).

    ``unet_location=None`` trains without the perceptual term (the plain β-VAE ablation).
    """
    from icsg.models.unet import feature_extractor
    from icsg.models.vae import VAEConfig, build_vae
    from icsg.pretrained import load_unet

    train = VoxelDataset(data_dir, "train", "vae", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit)
    val = VoxelDataset(data_dir, "val", "vae", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    vcfg = VAEConfig(grid_size=train.grid.size, n_cond=train.condition["n_bins"],
                     **({"periodic": train.periodic} | (vae_cfg or {})))
    features = None
    if unet_location is not None and vcfg.alpha > 0:
        unet, _ = load_unet(unet_location)
        features = feature_extractor(unet)
    man = train.arrays["manifest"]
    meta = {"kind": "vae", "config": vcfg.to_dict(), "grid": man["grid"], "condition": man["condition"],
            "elements_Z": man["elements_Z"], "data": str(data_dir), "unet": str(unet_location),
            "train_source": (man.get("sources") or [None])[0],
            "train": cfg.__dict__, "n_train": train.n, "n_val": val.n}

    def factory():
        model = build_vae(vcfg, features)
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr))
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr)


def train_readout(data_dir, out_dir, readout_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
                  resume: bool = False, limit: int | None = None, verbose: int = 2, init_weights=None,
                  resume_lr: float | None = None, train_only: tuple[str, ...] | None = None) -> dict:
    """Readout encoder + heads (``icsg.models.readout``) on a prepared dataset's site lists, cells and property
    (no maps). The cell and property are standardised with the training split's statistics, stored in the config.

    ``train_only``: the parts that learn (of 'encoder', 'heads', 'positions', 'slots'); the others keep the
    weights of ``init_weights``. Training a new head on a frozen encoder keeps the codes, and so the
    priors fitted to them, valid."""
    import numpy as np

    from icsg.models.readout import ReadoutConfig, build_readout

    train = VoxelDataset(data_dir, "train", "readout", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit)
    val = VoxelDataset(data_dir, "val", "readout", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    man = train.arrays["manifest"]
    prop = train.arrays["prop"][np.isfinite(train.arrays["prop"])]
    stats = {"abc_mean_A": float(train.arrays["abc_A"].mean()), "abc_std_A": float(train.arrays["abc_A"].std() + 1e-6),
             "property_mean": float(prop.mean()) if prop.size else 0.0,
             "property_std": float(prop.std() + 1e-6) if prop.size else 1.0}
    if train.periodic:  # any lattice (many elements): the cell's angles are read too, the counts seen directly
        ang = train.arrays["angles_deg"]
        stats.update(angles=True, angle_mean_deg=float(ang.mean()), angle_std_deg=float(ang.std() + 1e-6),
                     count_features=True, slot_matching=True, ordinal_counts=True, site_features=True)
    max_sites = int(train.arrays["site_Z"].shape[1])
    readout_cfg = dict(readout_cfg or {})
    if readout_cfg.get("latent_dim") is None:  # room for the count and site paths (any lattice), and 32 more
        readout_cfg["latent_dim"] = 32 + (len(man["elements_Z"]) + 6 * max_sites if train.periodic else 0)
    rcfg = ReadoutConfig(elements_Z=tuple(man["elements_Z"]), max_count=int(max(train.counts.max(), 1)),
                         max_sites=max_sites, **stats, **readout_cfg)
    meta = {"kind": "readout", "config": rcfg.to_dict(), "grid": man["grid"], "condition": man["condition"],
            "elements_Z": man["elements_Z"], "data": str(data_dir), "train": cfg.__dict__,
            "n_train": train.n, "n_val": val.n, "train_only": list(train_only) if train_only else None}
    parts = ("encoder", "heads", "positions", "slots")
    if train_only and not set(train_only) <= set(parts):
        raise ValueError(f"train_only must name parts of {parts}, got {train_only}")
    if train_only and init_weights is None and not resume:
        raise ValueError("train_only needs init_weights: the frozen parts would keep random weights")

    def factory():
        model = build_readout(rcfg)
        for part in parts:
            getattr(model, part).trainable = not train_only or part in train_only
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr))
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr, init_partial=bool(train_only))


def _train_cfg(a, default_lr: float) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, batch_size=a.batch, lr=a.lr or default_lr,
                       steps_per_epoch=a.steps_per_epoch or None, val_limit=a.val_limit,
                       patience=a.patience, seed=a.seed)


def run_train_unet(a) -> int:
    state = train_unet(a.data, a.out, {"base_filters": a.base_filters, "depth": a.depth},
                       _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit, verbose=0 if a.quiet else 2,
                       crop=a.crop or None, init_weights=a.init_weights,
                       occupancy_weight=a.occupancy_weight, resume_lr=a.lr if a.resume else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0


def run_train_vae(a) -> int:
    vcfg = {"latent_dim": a.latent, "filters": tuple(int(f) for f in a.filters.split(",")), "beta": a.beta,
            "alpha": a.alpha if a.unet else 0.0, "coord_weight": a.coord_weight,
            "density_asinh_k": a.density_asinh}
    state = train_vae(a.data, a.out, a.unet, vcfg, _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit,
                      verbose=0 if a.quiet else 2, init_weights=a.init_weights,
                      resume_lr=a.lr if a.resume else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0


def run_train_readout(a) -> int:
    rcfg = {"latent_dim": a.latent, "hidden": a.hidden, "beta": a.beta, "cell_weight": a.cell_weight,
            "position_weight": a.position_weight, "slot_weight": a.slot_weight}
    state = train_readout(a.data, a.out, rcfg, _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit,
                          verbose=0 if a.quiet else 2, init_weights=a.init_weights,
                          resume_lr=a.lr if a.resume else None,
                          train_only=tuple(a.train_only.split(",")) if a.train_only else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0
