"""Dev crystals for choosing reading settings: perov_5 validation crystals after the first 200 that
``benchmarks/reconstruction.py --limit 200`` scores, encoded, decoded and segmented by the shipped models.

Shared by ``position_rounds.py`` and ``restart.py`` so that both read the same crystals the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from icsg.data.dataset import condition_onehot
from icsg.data.filters import FilterConfig, standardise
from icsg.data.sources import iter_source
from icsg.generation.latent_cell import cell_readout
from icsg.generation.pipeline import DecodedBatch, batch_to_sites, decode_latents, segmentation_for
from icsg.grid import GridSpec
from icsg.pretrained import load_unet, load_vae
from icsg.representation.augment import TTA_ROTATIONS
from icsg.representation.density import encode
from icsg.segmentation.watershed import SegmentationConfig

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "perov_5"


@dataclass
class DevBatch:
    """Up to ``batch`` crystals: [(record, Structure, encoding)], their decoded batch, posterior means and
    one-hot conditions, and their segmentation (``batch_to_sites`` output, not refined)."""

    crystals: list[tuple]
    decoded: DecodedBatch
    mu: np.ndarray
    cond: np.ndarray
    sites: list[tuple]


def dev_batches(weights: str, start: int, stop: int, batch: int = 16
                ) -> tuple[object, GridSpec, SegmentationConfig, list, Iterator[DevBatch]]:
    """(vae, grid, decoded-map segmentation, records, batches) for validation crystals ``start``..``stop - 1``;
    the batches are decoded lazily, one at a time."""
    unet, um = load_unet(weights)
    vae, vm = load_vae(weights)
    spec = GridSpec.from_dict(vm["grid"])
    seg = segmentation_for(um["elements_Z"], "fit", maps="decoded")
    cell, ci = cell_readout(weights, "latent", vm), vm["condition"]
    recs = list(iter_source(str(DATA / "val.csv.gz"), limit=stop))[start:stop]
    acc = [(r, s, encode(s, spec, item=r.id)) for r in recs for s in [standardise(r.structure, r.id, FilterConfig())]]

    def gen() -> Iterator[DevBatch]:
        for i in range(0, len(acc), batch):
            ch = acc[i:i + batch]
            x = np.stack([np.concatenate([e.density[..., None], e.coords], -1) for _, _, e in ch]).astype(np.float32)
            cond = condition_onehot([r.properties.get(ci["property"], np.nan) for r, _, _ in ch], ci)
            mu, _ = vae.encoder.predict([x, cond], verbose=0)
            dec = decode_latents(vae, unet, mu, cond, um["elements_Z"], batch, TTA_ROTATIONS,
                                 um.get("class_weights"), cell)
            yield DevBatch(ch, dec, mu, cond, batch_to_sites(dec, spec, seg))

    return vae, spec, seg, recs, gen()
