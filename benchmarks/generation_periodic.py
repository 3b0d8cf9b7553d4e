"""Generation on the any-lattice (periodic) models, on the CDVAE protocol against the held-out part.

    python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic
    python benchmarks/generation_periodic.py ... --n-per-bin 20 --prior fitted
    python benchmarks/generation_periodic.py ... --real 1000     # training crystals in place of samples: the ceiling

Random codes of each formation-energy decile (``icsg.generation.periodic``: z_read from the flow prior by default),
read with the periodic reading;
metrics of ``icsg.evaluation.generation_metrics`` against the dataset's validation crystals with the MP-20
cut-offs of CDVAE (structure 0.4, composition 10). Writes results/generation_periodic[_unguided|_real].json and
the section of the same name in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

from icsg.evaluation.generation_metrics import fingerprints, generation_metrics  # noqa: E402
from icsg.evaluation.reconstruct_periodic import dataset_records  # noqa: E402
from icsg.generation.periodic import generate_periodic  # noqa: E402

MP20_CUTOFFS = (0.4, 10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="folder of periodic models with vae_prior.npz")
    ap.add_argument("--data", required=True, help="the periodic dataset they were trained on (validation part = reference)")
    ap.add_argument("--n-per-bin", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prior", choices=("flow", "fitted"), default="flow")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--unguided", action="store_true",
                    help="read each element's likeliest count and the slots as they are (no charge-balance "
                         "preference, no separation of close atoms)")
    ap.add_argument("--real", type=int, default=0, metavar="N",
                    help="score N random training crystals (seed 0) in place of samples: what a generator that "
                         "reproduced the data would score at this sample size")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    load, t0 = os.getloadavg()[0], time.perf_counter()
    structs, n_bins = [], 10
    if a.real:
        train = dataset_records(a.data, "train")
        structs = [train[i].structure for i in np.random.default_rng(0).choice(len(train), a.real, replace=False)]
    for k in range(0 if a.real else n_bins):
        df = generate_periodic(a.weights, a.n_per_bin, k, seed=k, workers=a.workers, progress=False, prior=a.prior,
                               temperature=a.temperature, guided=not a.unguided)
        structs += df["structure"].tolist()
    gen_seconds = time.perf_counter() - t0
    ref = [r.structure for r in dataset_records(a.data, "val")]
    metrics = generation_metrics(fingerprints(structs, workers=a.workers, desc="sample fingerprints"),
                                 fingerprints(ref, workers=a.workers, desc="reference fingerprints"), MP20_CUTOFFS)
    res = {"command": " ".join(["python benchmarks/generation_periodic.py", *(argv if argv is not None else sys.argv[1:])]),
           "load_average_before": load, "prior": a.prior, "temperature": a.temperature,
           "guided": not a.unguided, "real": a.real, "read_rate": sum(s is not None for s in structs) / len(structs),
           "generation_seconds": gen_seconds, "samples_per_s": len(structs) / gen_seconds, "n_reference": len(ref),
           **metrics}
    print(json.dumps(res, default=float))
    (HERE / "results").mkdir(exist_ok=True)
    name = "generation_periodic" + ("_real" if a.real else "_unguided" if a.unguided else "")
    (HERE / "results" / f"{name}.json").write_text(json.dumps(res, indent=1, default=float))
    update_section(HERE / "RESULTS.md", name, render(res))
    return 0


def render(r: dict) -> str:
    f = (lambda k, nd=3: f"{r[k]:.{nd}f}" if r.get(k) == r.get(k) and r.get(k) is not None else "–")
    guided, real = r.get("guided", True), r.get("real", 0)
    reading = ("Guided reading (the default of `icsg generate`): compositions preferring charge-balanced ones "
               "(pymatgen's oxidation states) or alloys among the ten likeliest with a training crystal's anonymous "
               "formula, atoms closer than 1 Å pushed apart." if guided else
               "Unguided reading: each element's likeliest count, the slots as they are.")
    name = "generation_periodic" + ("_real" if real else "" if guided else "_unguided")
    what = (f"{r['n_samples']} random training crystals in place of samples (what a generator that reproduced the "
            "data would score at this sample size; samples/s is not a generation speed)" if real else
            f"{r['n_samples']} random samples, 1/10 per formation-energy decile ({r.get('prior', 'fitted')} prior, "
            f"temperature {r.get('temperature', 1.0)}), {reading[0].lower()}{reading[1:]}")
    return "\n".join([
        "## Any lattice: generation by the periodic models (CDVAE protocol, MP-20 cut-offs"
        + ("; real training crystals" if real else "" if guided else "; unguided reading") + ")", "",
        f"Command: `{r['command']}` (results/{name}.json; load average {r['load_average_before']:.2f} before). "
        f"{what} Against the {r['n_reference']} held-out crystals of the dataset. CDVAE on MP-20 (Xie et al. "
        "2022): validity 1.000 / 0.867, COV-R 0.9915, COV-P 0.9949, d_ρ 0.688, d_elem 1.432.", "",
        "| read | structure validity | composition validity | COV-R | COV-P | d_ρ (g/cm³) | d_elem | samples/s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {f('read_rate')} | {f('structure_validity')} | {f('composition_validity')} | {f('cov_recall')} | "
        f"{f('cov_precision')} | {f('d_density_g_cm3')} | {f('d_n_elements')} | {f('samples_per_s', 2)} |",
    ]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
