"""Reconstruction of held-out perovskites through the shipped codec (perov_5 validation split).

    python benchmarks/reconstruction.py                               # all 3,787 crystals, fast reading
    python benchmarks/reconstruction.py --reading exact --limit 200   # the opt-in search, a sample

Crystal -> code (posterior means of the VAE and the readout encoder) -> decoded map -> reading ->
crystal, compared with the input by pymatgen's StructureMatcher (ltol 0.3, stol 0.5, angle_tol 10,
as CDVAE). Writes results/reconstruction_{fast,exact}.json, results/reconstruction_slices.png and the
reconstruction section of RESULTS.md (both readings side by side). Time is wall time of the whole
call (encoding included, imports and weight loading measured separately as start-up); peak memory
is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"
PUBLISHED = {"CDVAE (Xie et al. 2022, perov_5 test)": 0.9752, "FTCP": 0.9934,
             "Cond-DFC-VAE as benchmarked by Xie et al.": 0.5165}
PAPER = {"cell_mae_A": 0.06, "site_emd_A": 0.09, "dn_sites": 0.198}


def _load_idle() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N validation crystals (default: all)")
    ap.add_argument("--reading", choices=("fast", "exact"), default="fast")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    load_before = _load_idle()
    t0 = time.perf_counter()
    from icsg.data.sources import iter_source
    from icsg.evaluation.reconstruct import reconstruct_codes
    from icsg.generation.codec import DensityCodec

    codec = DensityCodec(a.weights, batch_size=a.batch)
    startup = time.perf_counter() - t0
    recs = list(iter_source(str(DATA / "val.csv.gz"), limit=a.limit))
    res = reconstruct_codes(recs, codec, reading=a.reading)
    res["startup_seconds"] = startup
    res["command"] = "python benchmarks/reconstruction.py" + (f" --limit {a.limit}" if a.limit else "") + (
        " --reading exact" if a.reading == "exact" else "")
    res["load_average_before"] = load_before
    res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                   cwd=HERE).stdout.strip()
    res["weights"] = {k: getattr(codec, f"{k}_meta").get("sha256") for k in ("vae", "unet", "readout")}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"reconstruction_{a.reading}.json").write_text(json.dumps(res, indent=1, default=float))
    if a.reading == "fast":
        _slices(recs[:6], codec, out / "reconstruction_slices.png")
    records = {r: json.loads((out / f"reconstruction_{r}.json").read_text())
               for r in ("fast", "exact") if (out / f"reconstruction_{r}.json").exists()}
    update_section(HERE / "RESULTS.md", "reconstruction", render(records))
    print(json.dumps({k: v for k, v in res.items() if k not in ("failures", "crystals")}, indent=1, default=float))
    return 0


def _slices(recs, codec, path) -> None:
    """True and decoded density, middle slice, for a few crystals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from icsg.data.dataset import condition_onehot
    from icsg.data.filters import standardise
    from icsg.representation.density import encode

    fig, axes = plt.subplots(2, len(recs), figsize=(2.2 * len(recs), 4.6), squeeze=False)
    for j, r in enumerate(recs):
        s = standardise(r.structure, r.id)
        e = encode(s, codec.spec)
        c = condition_onehot([r.properties[codec.condition["property"]]], codec.condition)
        z_map, _ = codec.split(codec.encode([s], c))
        rec = np.asarray(codec.vae.decoder.predict([z_map, c], verbose=0))[0, ..., 0]
        mid = codec.spec.size // 2
        axes[0, j].imshow(e.density[:, :, mid].T, origin="lower", cmap="magma")
        axes[1, j].imshow(rec[:, :, mid].T, origin="lower", cmap="magma")
        axes[0, j].set_title(s.composition.reduced_formula, fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    axes[0, 0].text(-4, 16, "true", rotation=90, va="center")
    axes[1, 0].text(-4, 16, "decoded", rotation=90, va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(records: dict) -> str:
    def f(v, nd=3):
        return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"

    cols = [r for r in ("fast", "exact") if r in records]
    rows = [("crystals", "n", 0), ("match rate", "match_rate", 3), ("cell MAE (Å)", "cell_mae_A", 4),
            ("site EMD (Å)", "site_emd_A", 3), ("abs Δ n_sites", "dn_sites", 3),
            ("species accuracy (matched sites)", "species_accuracy", 3),
            ("readout: composition exactly right", "readout_composition_accuracy", 3),
            ("readout: cell MAE (Å)", "readout_cell_mae_A", 4),
            ("crystals per second (whole call)", "crystals_per_second", 2),
            ("start-up: imports + weights (s)", "startup_seconds", 1), ("peak RSS (GB)", "peak_rss_gb", 2)]
    lines = ["## Reconstruction (perov_5 validation split)", "",
             "Crystal -> code -> decoded map -> reading -> crystal, against the input (StructureMatcher ltol 0.3, "
             "stol 0.5, angle_tol 10). *fast* is the default reading (`icsg reconstruct`, `icsg generate`, "
             "`icsg.Generator`); *exact* is the opt-in per-crystal search (`--reading exact`).", "",
             "| metric | " + " | ".join(f"{c} (`{records[c]['command']}`)" for c in cols) + " | paper |",
             "|---|" + "---|" * len(cols) + "---|"]
    for label, key, nd in rows:
        vals = [None if (c == "exact" and key.startswith("readout")) else records[c].get(key) for c in cols]
        lines.append(f"| {label} | " + " | ".join(f(v, nd) if nd else str(v) for v in vals)
                     + f" | {PAPER.get(key, '–')} |")
    lines += ["", "Published match rates on perov_5 (test split; Xie et al. 2022, Table 2): "
              + ", ".join(f"{k} {v:.4f}" for k, v in PUBLISHED.items()) + ".", ""]
    for c in cols:
        r = records[c]
        misses = [x for x in r.get("crystals", []) if not x.get("match")]
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"- {c}: commit {r.get('commit')}, load average {r.get('load_average_before')} before the run{note}; "
                     f"{len(misses)} misses, e.g. " + ", ".join(f"{m['formula']} read as {m.get('read')}"
                                                                for m in misses[:5]) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
