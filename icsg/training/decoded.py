"""A prepared dataset whose density maps are the VAE's reconstructions (``icsg decode-dataset``).

Why: the UNet is trained on true maps, but at generation time it segments *decoded*
maps, which are blurred and have peak heights off by tens of per cent. Training (or
fine-tuning) the UNet on the VAE's posterior-mean reconstructions, labelled with the
true species and occupancy of the input crystal, teaches it the decoder's distortions.

The output is an ordinary dataset folder (``icsg-voxels-1``): for every source shard a
``decoded_NNNNN.npz`` with the decoded density and the source's labels, lengths, ids,
splits and properties; with ``keep_true`` the source shards are listed too (symlinked,
not copied), so a UNet trained on it sees both kinds of map. Decoded shards sort first,
so a validation limit picks decoded maps. Shards are written atomically and a rerun skips
the ones on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from icsg.data.dataset import MANIFEST, condition_onehot, load_manifest
from icsg.grid import GridSpec
from icsg.io import atomic_save_npz, atomic_write_json
from icsg.representation.density import vae_input


def decode_maps(vae, density: np.ndarray, abc_A: np.ndarray, prop: np.ndarray, condition: dict,
                spec: GridSpec, batch_size: int = 16) -> np.ndarray:
    """(k, n, n, n) true maps -> the VAE's posterior-mean reconstructions of the density channel.

    Crystals without a property value get the middle bin (as ``icsg reconstruct`` does).
    """
    onehot = condition_onehot(prop, condition)
    out = np.empty_like(density, dtype=np.float32)
    for i in range(0, len(density), batch_size):
        sl = slice(i, i + batch_size)
        mu, _ = vae.encoder.predict([vae_input(density[sl], abc_A[sl], spec), onehot[sl]], verbose=0)
        out[sl] = np.asarray(vae.decoder.predict([mu, onehot[sl]], verbose=0))[..., 0]
    return out


def decode_dataset(data: str | os.PathLike, out: str | os.PathLike, vae, vae_meta: dict,
                   keep_true: bool = True, batch_size: int = 16, progress: bool = True) -> dict:
    """Write the decoded copy of dataset ``data`` to ``out``; returns its manifest."""
    from tqdm.auto import tqdm

    src, dst = Path(data), Path(out)
    man = load_manifest(src)
    if man["grid"] != vae_meta["grid"]:
        raise ValueError(f"{src}: grid {man['grid']} differs from the VAE's {vae_meta['grid']}")
    if vae_meta.get("condition") is None:
        raise ValueError("the VAE has no condition description (vae.json 'condition')")
    spec = GridSpec.from_dict(man["grid"])
    (dst / "shards").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    decoded, true = [], []
    shards = [m for m in man["shards"] if m["n"] > 0]
    bar = tqdm(total=sum(m["n"] for m in shards), desc="decoding", unit="map", disable=not progress)
    for m in shards:
        name = "decoded_" + m["file"].split("_", 1)[1]
        path = dst / "shards" / name
        if not path.exists():
            with np.load(src / "shards" / m["file"]) as z:
                arrays = {k: z[k] for k in z.files}
            arrays["density"] = decode_maps(vae, arrays["density"], arrays["abc_A"], arrays["prop"],
                                            vae_meta["condition"], spec, batch_size)
            atomic_save_npz(path, **arrays)
        decoded.append({"file": name, "n": m["n"]})
        if keep_true:
            link = dst / "shards" / m["file"]
            if not link.exists():
                link.symlink_to((src / "shards" / m["file"]).resolve())
            true.append({"file": m["file"], "n": m["n"]})
        bar.update(m["n"])
    bar.close()
    new = {**man, "shards": decoded + true,
           "n_encoded": man["n_encoded"] * (2 if keep_true else 1),
           "n_train": man["n_train"] * (2 if keep_true else 1),
           "n_val": man["n_val"] * (2 if keep_true else 1),
           "decoded": {"source": str(src), "vae_sha256": vae_meta.get("sha256"), "keep_true": keep_true,
                       "seconds": time.perf_counter() - t0}}
    atomic_write_json(dst / MANIFEST, new)
    return new


def run_cli(a) -> int:
    from icsg.pretrained import WEIGHTS_DIR, load_vae

    vae, meta = load_vae(a.vae or WEIGHTS_DIR)
    man = decode_dataset(a.data, a.out, vae, meta, keep_true=not a.decoded_only, batch_size=a.batch)
    print(json.dumps({"out": a.out, "shards": len(man["shards"]), "n_train": man["n_train"], "n_val": man["n_val"],
                      "seconds": round(man["decoded"]["seconds"], 1)}))
    return 0
