"""Reconstruction on any lattice, compared with the canonical cell each crystal was encoded from (StructureMatcher
0.3 / 0.5 / 10°, as for the cubic models).

reading='code' (``reconstruct_codes_periodic``, needs a readout beside the VAE): crystal -> z = [z_map, z_read]
-> the codec's fast reading (``icsg.generation.periodic_codec``). reading='map' (``reconstruct_periodic``):
canonical cell's periodic map -> Cond-DFC-VAE (posterior mean) -> decoded [M, C] -> UNet species labels (no
rotation averaging: rotations are not symmetries of a general cell) -> ``decode_periodic``: what the map alone says.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from tqdm.auto import tqdm

from icsg.data.dataset import condition_onehot, load_arrays
from icsg.data.sources import Record
from icsg.errors import CrystalError, SourceError
from icsg.metrics import compare, summarise
from icsg.parallel import pmap
from icsg.pretrained import load_unet, load_vae
from icsg.representation.periodic import PeriodicGrid, encode_periodic
from icsg.representation.periodic_decode import decode_periodic
from icsg.segmentation.unet_inference import segment_maps


def dataset_records(data_dir: str | Path, split: str = "val", limit: int | None = None) -> list[Record]:
    """The crystals of a prepared periodic dataset's ``split`` as records: canonical cell and property."""
    arrays = load_arrays(data_dir, split)
    prop = (arrays["manifest"].get("condition") or {}).get("property")
    out = []
    for j in range(len(arrays["ids"]) if limit is None else min(limit, len(arrays["ids"]))):
        z = arrays["site_Z"][j]
        lat = Lattice.from_parameters(*arrays["abc_A"][j], *arrays["angles_deg"][j])
        s = Structure(lat, [Element.from_Z(int(k)) for k in z[z > 0]], arrays["site_frac"][j][z > 0])
        out.append(Record(str(arrays["ids"][j]), s, {prop: float(arrays["prop"][j])} if prop else {}))
    return out


def _encode_one(args):
    rec, grid = args
    if rec.error is not None:
        return rec, None, rec.error
    try:
        return rec, encode_periodic(rec.structure, grid, item=rec.id), None
    except CrystalError as err:
        return rec, None, err


def _decode_one(args):
    rid, ref, density, species, coords, grid, fit_tol = args
    try:
        return rid, compare(ref, decode_periodic(density, species, coords, grid, fit_tol=fit_tol,
                                                    max_atoms=2 * grid.max_sites)), None
    except ValueError as err:  # a decoded map without atoms, or with an implausible cell
        return rid, None, CrystalError(rid, "decode_failed", str(err))


def reconstruct_codes_periodic(records: list[Record], codec, batch_size: int = 64,
                               progress: bool = True) -> dict:
    """``reconstruct_periodic``'s summary for the code reading of a ``PeriodicCodec``."""
    t0 = time.perf_counter()
    failures, pairs = [], []
    for i in tqdm(range(0, len(records), batch_size), desc="reconstruct[code]", disable=not progress):
        chunk, kept = records[i:i + batch_size], []
        for r in chunk:
            try:
                if r.error is not None:
                    raise r.error
                kept.append((r, encode_periodic(r.structure, codec.grid, item=r.id).structure))
            except CrystalError as err:
                failures.append({"id": r.id, "reason": err.reason, "detail": err.detail})
        if not kept:
            continue
        cond = condition_onehot([r.properties.get(codec.condition["property"], np.nan) for r, _ in kept],
                                codec.condition)
        z = codec.encode([s for _, s in kept], cond, [r.id for r, _ in kept])
        for (r, ref), pred in zip(kept, codec.decode(z)):
            if pred is None:
                failures.append({"id": r.id, "reason": "decode_failed", "detail": "no atoms or no cell in the code"})
            else:
                pairs.append(compare(ref, pred))
    return _summary(pairs, failures, len(records), t0)


def _summary(pairs: list, failures: list[dict], n: int, t0: float) -> dict:
    """``summarise``'s keys with wall seconds, crystals_per_s and peak memory since ``t0``."""
    out = summarise(pairs, failures, n)
    out["seconds"] = time.perf_counter() - t0
    out["crystals_per_s"] = n / out["seconds"]
    out["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


def reconstruct_periodic(records: list[Record], vae_location: str | Path, unet_location: str | Path,
                         batch_size: int = 8, fit_tol: float | None = None, workers: int | None = None,
                         progress: bool = True) -> dict:
    """Match rate, cell and angle errors, site EMD and |Δn| of the reconstructed crystals (``summarise``'s
    keys), crystals_per_s and peak memory. Each is conditioned on its property's bin (the middle bin where it
    has none). ``fit_tol`` is ``decode_periodic``'s: None reads decoded maps by their peaks alone."""
    t0 = time.perf_counter()
    vae, vmeta = load_vae(vae_location)
    if not vmeta.get("config", {}).get("periodic"):
        raise SourceError(f"{vae_location}: not a periodic VAE (train it on a dataset prepared with --encoding periodic)")
    unet, umeta = load_unet(unet_location)
    grid = PeriodicGrid.from_dict(vmeta["grid"])
    cond_spec = vmeta["condition"]
    encoded, failures = [], []
    for rec, e, err in pmap(_encode_one, [(r, grid) for r in records], workers, desc="encode", total=len(records),
                            progress=progress):
        if err is not None:
            failures.append({"id": rec.id, "reason": err.reason, "detail": err.detail})
        else:
            encoded.append((rec, e))
    jobs = []
    for i in tqdm(range(0, len(encoded), batch_size), desc="reconstruct[periodic]", disable=not progress):
        chunk = encoded[i:i + batch_size]
        x = np.stack([np.concatenate([e.density[..., None], e.coords], -1) for _, e in chunk]).astype(np.float32)
        cond = condition_onehot([r.properties.get(cond_spec["property"], np.nan) for r, _ in chunk], cond_spec)
        mu, _ = vae.encoder.predict([x, cond], verbose=0)
        recon = np.asarray(vae.decoder.predict([mu, cond], verbose=0))
        species, _ = segment_maps(unet, recon[..., 0], umeta["elements_Z"], batch_size, rotations=1)
        jobs += [(r.id, e.structure, recon[k, ..., 0], species[k], recon[k, ..., 1:], grid, fit_tol)
                 for k, (r, e) in enumerate(chunk)]
    pairs = []
    for rid, m, err in pmap(_decode_one, jobs, workers, desc="decode", total=len(jobs), progress=progress):
        if err is not None:
            failures.append({"id": rid, "reason": err.reason, "detail": err.detail})
        else:
            pairs.append(m)
    return _summary(pairs, failures, len(records), t0)
