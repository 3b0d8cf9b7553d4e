"""Random crystals of any lattice from a folder of periodic models (VAE, UNet and readout trained on a dataset
made by ``icsg prepare --encoding periodic``).

With a readout in the folder a code is [z_map, z_read] and the codec's fast reading gives the crystal
(``icsg.generation.periodic_codec``: composition, cell and positions from z_read). z_read comes from the flow prior
over the training crystals' z_read (prior 'flow', ``flow_prior.*``), z_map is its mean given z_read under the bin's
Gaussian; prior 'fitted' draws whole codes from one Gaussian per property bin fitted to the posterior means of the
training crystals (``vae_prior.npz``; both written by ``icsg fit-latent-prior``, ``fit_periodic_prior``). The
reading of such codes is guided (``generate_periodic``'s ``guided``). Without a readout, the code is decoded into
[M, C], the UNet labels the density, and the periodic reading (``icsg.representation.periodic_decode``) gives the
lattice (from the coordinate channels) and the atoms, unguided.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from icsg.errors import WeightsError
from icsg.generation.latent_prior import PRIOR_FILE, load_latent_prior
from icsg.generation.plots import slice_sheet
from icsg.parallel import pmap
from icsg.pretrained import has_readout, load_unet, load_vae
from icsg.representation.periodic import PeriodicGrid
from icsg.representation.periodic_decode import decode_periodic
from icsg.segmentation.unet_inference import segment_maps


def _read(args):
    density, species, coords, grid = args
    try:
        return decode_periodic(density, species, coords, grid, fit_tol=None, max_atoms=2 * grid.max_sites), ""
    except ValueError as err:  # no atoms in the map, or a cell no crystal has
        return None, str(err)


MIN_DISTANCE_A = 1.0  # the closest two atoms of the Materials Project training crystals: 0.97 Å


def generate_periodic(weights_dir: str | os.PathLike, n: int, condition: int, seed: int = 0,
                      batch_size: int = 16, workers: int = 1, progress: bool = True, prior: str = "flow",
                      temperature: float = 1.0, guided: bool = True) -> pd.DataFrame:
    """``n`` random crystals of property bin ``condition``: one row each with 'structure' (None where the map
    could not be read), 'formula', 'failure' and the code 'z'. ``prior``: 'flow' (models with a readout) or
    'fitted'. ``guided`` (with a readout): compositions are read preferring charge-balanced ones among the
    likeliest with a training crystal's anonymous formula, and atoms closer than MIN_DISTANCE_A are pushed apart
    (``PeriodicCodec.decode``); False reads each element's likeliest count and the slots as they are."""
    path = Path(weights_dir) / PRIOR_FILE
    if not path.exists():
        raise WeightsError(f"{path}: missing (run 'icsg fit-latent-prior DATA --weights {weights_dir}')")
    codec = None
    if has_readout(weights_dir):
        from icsg.generation.periodic_codec import PeriodicCodec

        codec = PeriodicCodec(weights_dir, batch_size=batch_size)
        vae, meta = codec.vae, codec.vae_meta
    else:
        vae, meta = load_vae(weights_dir)
    n_bins = int(meta["condition"]["n_bins"])
    if not 0 <= condition < n_bins:
        raise ValueError(f"--condition must be a property bin 0..{n_bins - 1}, got {condition}")
    if prior not in ("flow", "fitted") or (prior == "flow" and codec is None):
        raise ValueError(f"{weights_dir}: prior {prior!r} does not apply (periodic models: 'flow' with a readout, "
                         "or 'fitted')")
    gaussians, rng = load_latent_prior(path), np.random.default_rng(seed)
    if prior == "flow":
        from icsg.generation.flow_prior import load_flow_prior

        z_read = load_flow_prior(weights_dir, codec.cfg.latent_dim).sample(n, rng, temperature, condition=condition)
        z = gaussians.complete(z_read, condition)
    else:
        z = gaussians.sample(n, rng, temperature, condition=condition)
    cond = np.eye(n_bins, dtype=np.float32)[np.full(n, condition)]
    if codec is not None:
        formulas = (gaussians.formulas, gaussians.formula_counts) if guided and gaussians.formulas is not None else None
        crystals = codec.decode(z, formulas, MIN_DISTANCE_A if guided else None)
        return pd.DataFrame([{"structure": s, "formula": s.composition.reduced_formula if s is not None else "",
                              "failure": "" if s is not None else "no atoms or no cell in the code", "z": code,
                              "condition": condition} for s, code in zip(crystals, z)])
    unet, umeta = load_unet(weights_dir)
    grid = PeriodicGrid.from_dict(meta["grid"])
    jobs = []
    for i in range(0, n, batch_size):
        maps = np.asarray(vae.decoder.predict([z[i:i + batch_size], cond[i:i + batch_size]], verbose=0))
        species, _ = segment_maps(unet, maps[..., 0], umeta["elements_Z"], batch_size, rotations=1)
        jobs += [(m[..., 0], s, m[..., 1:], grid) for m, s in zip(maps, species)]
    rows = [{"structure": s, "formula": s.composition.reduced_formula if s is not None else "", "failure": why,
             "z": code, "condition": condition}
            for (s, why), code in zip(pmap(_read, jobs, workers, desc="read", total=n, progress=progress), z)]
    return pd.DataFrame(rows)


def run_generate_periodic(a, out: Path) -> dict:
    """``icsg generate --weights FOLDER`` with periodic models: CIFs of the readable crystals, summary.json and
    density_slices.png (``_plot_maps``)."""
    from icsg.io import atomic_write_json, atomic_write_text

    for option, default in (("around", None), ("interpolate", None), ("target", None), ("guide", 1),
                            ("reading", "fast")):
        if getattr(a, option) != default:
            raise ValueError(f"--{option} does not apply to periodic models (random codes per --condition only)")
    t0 = time.perf_counter()
    condition = 4 if a.condition is None else a.condition
    prior = a.prior if has_readout(a.weights) or a.prior != "flow" else "fitted"  # map-only models: Gaussians
    df = generate_periodic(a.weights, a.n or 100, condition, a.seed, a.batch, a.workers, prior=prior,
                           temperature=a.temperature)
    for i, row in df[df["structure"].notna()].iterrows():
        atomic_write_text(out / f"gen_{i:05d}_{row['formula']}.cif", row["structure"].to(fmt="cif"))
    _plot_maps(a.weights, df, condition, out / "density_slices.png")
    summary = {"model": "periodic", "weights": str(a.weights), "condition": condition, "n_requested": int(len(df)),
               "read": int(df["structure"].notna().sum()), "failures": df["failure"][df["failure"] != ""].tolist()[:20],
               "wall_seconds": time.perf_counter() - t0, "seed": a.seed, "prior": prior,
               "temperature": a.temperature, "guided": True}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _plot_maps(weights_dir, df: pd.DataFrame, condition: int, path: Path, max_maps: int = 25) -> None:
    """Mid-slices (z = n/2, fractional) of the density maps the first readable codes decode to (z_map), titled with
    the crystals read from them."""
    rows = df[df["structure"].notna()].head(max_maps)
    if rows.empty:
        return
    vae, meta = load_vae(weights_dir)
    n_bins = int(meta["condition"]["n_bins"])
    z = np.stack(rows["z"].to_list()).astype(np.float32)[:, :int(meta["config"]["latent_dim"])]
    maps = np.asarray(vae.decoder.predict([z, np.eye(n_bins, dtype=np.float32)[np.full(len(z), condition)]],
                                          verbose=0))
    slice_sheet(maps[:, :, :, maps.shape[3] // 2, 0], path, rows["formula"].to_list())
