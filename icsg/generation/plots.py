"""Plots of generated crystals' density maps, written beside the CIFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icsg.io import atomic_path


def slice_sheet(slices: np.ndarray, path: Path, titles: list[str] | None = None, max_maps: int = 25) -> None:
    """PNG grid of density mid-slices (z = n/2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(len(slices), max_maps)
    if k == 0:
        return
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(slices[i].T, origin="lower", cmap="magma")
            if titles:
                ax.set_title(titles[i] or "-", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
