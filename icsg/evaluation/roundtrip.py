"""Encode -> decode from the ground-truth arrays -> compare: the representation's intrinsic error.

No network is involved, so these numbers bound every model trained on the encoding.
Density encoding: decoded from (S, C) with M for optional weighting; periodic (any lattice): from (M, S, C)
(``icsg.representation.periodic``); iMatGen: from the cell and basis images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from icsg.data.filters import FilterConfig, standardise
from icsg.data.sources import Record
from icsg.errors import CrystalError
from icsg.metrics import compare, summarise
from icsg.grid import GridSpec
from icsg.parallel import pmap
from icsg.representation.density import encode
from icsg.representation.imatgen import ImatgenSpec, decode_imatgen, encode_imatgen
from icsg.representation.periodic import PeriodicGrid, encode_periodic
from icsg.representation.periodic_decode import decode_periodic
from icsg.segmentation.watershed import SegmentationConfig, decode_structure


@dataclass(frozen=True)
class RoundtripConfig:
    encoding: str = "density"
    grid: GridSpec = field(default_factory=GridSpec)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    imatgen: ImatgenSpec = field(default_factory=ImatgenSpec)
    periodic: PeriodicGrid = field(default_factory=PeriodicGrid)
    filters: FilterConfig = field(default_factory=FilterConfig)


def _one(args):
    rec, cfg = args
    if rec.error is not None:
        return rec.id, None, rec.error
    try:
        if cfg.encoding == "periodic":  # any lattice: its own canonical cell, no cubic standardisation
            e = encode_periodic(rec.structure, cfg.periodic, item=rec.id)
            return rec.id, compare(e.structure, decode_periodic(e.density, e.species, e.coords, cfg.periodic)), None
        s = standardise(rec.structure, rec.id, cfg.filters)
        if cfg.encoding == "density":
            e = encode(s, cfg.grid, item=rec.id)
            pred = decode_structure(e.species, e.coords, e.density, None, cfg.grid, cfg.segmentation)
        elif cfg.encoding == "imatgen":
            e = encode_imatgen(s, cfg.imatgen, item=rec.id)
            pred = decode_imatgen(e.cell, e.basis, e.elements, cfg.imatgen)
        else:
            raise ValueError(f"unknown encoding '{cfg.encoding}' (density, periodic or imatgen)")
        return rec.id, compare(s, pred), None
    except CrystalError as err:
        return rec.id, None, err
    except ValueError as err:
        return rec.id, None, CrystalError(rec.id, "decode_failed", str(err))


def run_roundtrip(records: list[Record], cfg: RoundtripConfig = RoundtripConfig(), workers: int | None = None,
                  progress: bool = True) -> dict:
    """Metrics dict: n, cell_mae_A, site_emd_A, dn_sites, species_accuracy, match_rate, failures, mismatches (ids
    decoded to another crystal), crystals_per_s."""
    t0 = time.perf_counter()
    pairs, failures, mismatches = [], [], []
    for rid, metrics, err in pmap(_one, [(r, cfg) for r in records], workers, desc=f"roundtrip[{cfg.encoding}]",
                                  total=len(records), progress=progress):
        if err is not None:
            failures.append({"id": rid, "reason": err.reason, "detail": err.detail})
        else:
            pairs.append(metrics)
            if not metrics.match:
                mismatches.append(rid)
    out = summarise(pairs, failures, len(records))
    out["mismatches"] = mismatches
    out["encoding"] = cfg.encoding
    out["seconds"] = time.perf_counter() - t0
    out["crystals_per_s"] = len(records) / out["seconds"] if out["seconds"] > 0 else float("nan")
    return out
