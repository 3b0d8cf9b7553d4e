"""Settings of the training commands (no keras or torch import, so the command line can show them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Args:
        epochs: maximum epochs.
        batch_size: crystals per step.
        lr: Adam learning rate.
        steps_per_epoch: cap on steps per epoch (a random subset each epoch), so
            checkpoints come often on a CPU; None = the whole split.
        val_limit: validation crystals evaluated per epoch (None = all).
        patience: early-stopping patience in epochs (validation loss).
        seed: seeds weights, shuffling and augmentation.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    steps_per_epoch: int | None = 200
    val_limit: int | None = 256
    patience: int = 5
    seed: int = 0


@dataclass(frozen=True)
class CGCNNTrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 1e-3
    patience: int = 15
    seed: int = 0
    n_conv: int = 1
    hidden: int = 64
    loss: str = "mse"  # or "l1": the benchmark metric is MAE, and zero-inflated targets (band gap) favour it
