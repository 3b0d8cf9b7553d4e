"""Reconstruction through the shipped Cond-DFC-VAE and UNet on held-out perovskites.

    python benchmarks/reconstruction.py              # all 3,787 perov_5 validation crystals
    python benchmarks/reconstruction.py --limit 300  # a quicker look
    python benchmarks/reconstruction.py --limit 500 --no-refine  # segmentation only (several times faster)

Runs the same code as ``icsg reconstruct`` and writes benchmarks/results/reconstruction.json
(reconstruction_segmentation.json with --no-refine, a suffix _coords_cell with --cell-from coords,
_no_soft with --soft-steps 0, _no_restart with --no-restart, _no_exact_fit with --exact-fit-steps 0,
_no_element_refit with --no-element-refit, _refit_width{N}, _refit_rounds{N}, _refit_fits{N} and
_no_site_refit with --element-refit-width N, --element-refit-rounds N, --element-refit-fits N and --no-site-refit;
with the restart on, the record also scores every crystal's first reading, column *no restart*),
results/reconstruction_slices.png (true vs decoded density mid-slices) and the
reconstruction section of benchmarks/RESULTS.md, with the training cost per epoch
recorded in the weights' JSON and inference time per crystal measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

from icsg.data.sources import iter_source  # noqa: E402
from icsg.evaluation.reconstruct import reconstruct  # noqa: E402
from icsg.generation.cli import add_reading_options, reading_config  # noqa: E402
from icsg.generation.consistency import ConsistencyConfig  # noqa: E402
from icsg.generation.latent_cell import cell_readout  # noqa: E402
from icsg.pretrained import load_unet, load_vae  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"
PAPER = {"match_rate": 0.90, "cell_mae_A": 0.06, "site_emd_A": 0.09, "dn_sites": 0.2, "unet_nonzero_recall": 0.87}

POSITION_STEPS = ConsistencyConfig().position_steps
RESTART_ABOVE = ConsistencyConfig().restart_above
EXACT_FIT_STEPS = ConsistencyConfig().exact_fit_steps
ELEMENT_REFIT_ABOVE = ConsistencyConfig().element_refit_above
REFIT_WIDTH = ConsistencyConfig().element_refit_width
REFIT_ROUNDS = ConsistencyConfig().element_refit_rounds
REFIT_FITS = ConsistencyConfig().element_refit_fits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--skip", type=int, default=0, metavar="N",
                    help="start after the first N validation crystals (a second sample beside the first --limit; "
                         "record and section get the suffix _from{N})")
    ap.add_argument("--weights", default=str(HERE.parent / "weights"))
    ap.add_argument("--no-refine", action="store_true", help="segmentation only (icsg reconstruct --no-refine)")
    add_reading_options(ap)  # --soft-steps, --position-steps, --cell-from, as in icsg reconstruct/generate
    a = ap.parse_args(argv)
    unet, um = load_unet(a.weights)
    vae, vm = load_vae(a.weights)
    recs = list(iter_source(str(DATA / "val.csv.gz"), limit=None if a.limit is None else a.skip + a.limit))[a.skip:]
    refine = reading_config(a)
    res = reconstruct(recs, vae, vm, unet, um, batch_size=16, refine=refine,
                      cell=cell_readout(a.weights, a.cell_from, vm))
    res["command"] = ("python benchmarks/reconstruction.py" + (f" --limit {a.limit}" if a.limit else "")
                      + (f" --skip {a.skip}" if a.skip else "")
                      + (" --no-refine" if a.no_refine else "") + (" --cell-from coords" if a.cell_from == "coords"
                                                                    else "")
                      + (f" --soft-steps {a.soft_steps}" if a.soft_steps != 60 and not a.no_refine else "")
                      + (f" --position-steps {a.position_steps}"
                         if a.position_steps != POSITION_STEPS and not a.no_refine else "")
                      + (" --no-restart" if a.no_restart and not a.no_refine else
                         f" --restart-above {a.restart_above}" if a.restart_above != RESTART_ABOVE and not a.no_refine
                         else "")
                      + (f" --exact-fit-steps {a.exact_fit_steps}"
                         if a.exact_fit_steps != EXACT_FIT_STEPS and not a.no_refine else "")
                      + (" --no-element-refit" if a.no_element_refit and not a.no_refine else
                         f" --element-refit-above {a.element_refit_above}"
                         if a.element_refit_above != ELEMENT_REFIT_ABOVE and not a.no_refine else "")
                      + (f" --element-refit-width {a.element_refit_width}"
                         if a.element_refit_width != REFIT_WIDTH and not a.no_refine else "")
                      + (f" --element-refit-rounds {a.element_refit_rounds}"
                         if a.element_refit_rounds != REFIT_ROUNDS and not a.no_refine else "")
                      + (f" --element-refit-fits {a.element_refit_fits}"
                         if a.element_refit_fits != REFIT_FITS and not a.no_refine else "")
                      + (" --no-site-refit" if a.no_site_refit and not a.no_refine else ""))
    res["skip"] = a.skip
    res["training"] = {"unet": um.get("training"), "vae": vm.get("training")}
    res.pop("failures_detail", None)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    # the segmentation-only run has its own file and section, so both stay on record
    name = ("reconstruction_segmentation" if a.no_refine else "reconstruction") + (
        "_coords_cell" if a.cell_from == "coords" else "")
    name += "_no_soft" if not a.soft_steps and not a.no_refine else ""
    name += "_no_position" if POSITION_STEPS and not a.position_steps and not a.no_refine else ""
    name += "_no_restart" if a.no_restart and not a.no_refine else ""
    name += "_no_exact_fit" if not a.exact_fit_steps and not a.no_refine else ""
    name += "_no_element_refit" if a.exact_fit_steps and a.no_element_refit and not a.no_refine else ""
    name += (f"_refit_width{a.element_refit_width}" if a.element_refit_width != REFIT_WIDTH and a.exact_fit_steps
             and not a.no_element_refit and not a.no_refine else "")
    refit_on = a.exact_fit_steps and not a.no_element_refit and not a.no_refine
    name += f"_refit_rounds{a.element_refit_rounds}" if a.element_refit_rounds != REFIT_ROUNDS and refit_on else ""
    name += f"_refit_fits{a.element_refit_fits}" if a.element_refit_fits != REFIT_FITS and refit_on else ""
    name += "_no_site_refit" if a.no_site_refit and refit_on else ""
    name += f"_from{a.skip}" if a.skip else ""
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, default=float))
    if not a.skip:  # the slices belong to the main record
        _slices(recs[:6], vae, vm, out / "reconstruction_slices.png")
    update_section(HERE / "RESULTS.md", name, render(res, name))
    shown = {k: v for k, v in res.items() if k not in ("failures", "training", "crystals")}
    print(json.dumps(shown, indent=1, default=float))
    return 0


def _slices(recs, vae, vm, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from icsg.data.dataset import property_bin
    from icsg.data.filters import standardise
    from icsg.grid import GridSpec
    from icsg.representation.density import encode

    spec = GridSpec.from_dict(vm["grid"])
    cond = vm["condition"]
    fig, axes = plt.subplots(2, len(recs), figsize=(2.2 * len(recs), 4.6), squeeze=False)
    for j, r in enumerate(recs):
        s = standardise(r.structure, r.id)
        e = encode(s, spec)
        x = np.concatenate([e.density[..., None], e.coords], -1)[None].astype(np.float32)
        c = np.eye(cond["n_bins"], dtype=np.float32)[property_bin([r.properties[cond["property"]]],
                                                                  np.array(cond["edges"]))]
        mu, _ = vae.encoder.predict([x, c], verbose=0)
        rec = np.asarray(vae.decoder.predict([mu, c], verbose=0))[0, ..., 0]
        mid = spec.size // 2
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


def render(res: dict, name: str = "reconstruction") -> str:
    def f(v, nd=3):
        return "nan" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"

    rows = [("match rate", "match_rate", "≥ 0.90"), ("cell MAE (Å)", "cell_mae_A", "0.06"),
            ("site EMD (Å)", "site_emd_A", "0.09"), ("abs Δ n_sites", "dn_sites", "0.198"),
            ("species accuracy (matched sites)", "species_accuracy", "-"),
            ("UNet non-zero recall (true maps)", "unet_nonzero_recall", "0.87"),
            ("UNet non-zero recall (decoded maps)", "unet_nonzero_recall_decoded", "-"),
            ("VAE MSE (normalised 4 channels)", "vae_mse", "0.013 (their scale)"),
            ("VAE MSE, density channel", "vae_density_mse", "-"),
            ("same, answering every crystal with the mean map", "mean_map_density_mse", "-")]
    tm = res.get("true_maps") or {}
    to = res.get("decoded_true_occupancy") or {}
    so = res.get("segmentation_only") or {}
    nr = res.get("without_restart") or {}
    ne = res.get("without_exact_fit") or {}
    refine = res.get("refine")
    title = ("Reconstruction through the trained VAE and UNet" if refine else
             "Reconstruction through the trained VAE and UNet, segmentation only (no round-trip refinement)")
    if res.get("cell_from") != "latent":
        title += ", cell from the decoded coordinates"
    if refine and not refine.get("soft_steps"):
        title += ", no soft fit before the search"
    if refine and not refine.get("position_steps"):
        title += ", no position rounds after the search"
    if refine and "restart_above" in refine and refine["restart_above"] is None:
        title += ", no restart"
    exact = bool(refine and refine.get("exact_fit_steps"))
    if refine and not exact:
        title += ", no exact fit"
    elif refine and refine.get("element_refit_above") is None:
        title += ", no element refit"
    # what `icsg reconstruct` needs today to read as this record did (records older than the exact fit had none)
    refit_flag = ("" if not refine else " --exact-fit-steps 0" if not exact else " --no-element-refit"
                  if refine.get("element_refit_above") is None else
                  f" --element-refit-above {refine['element_refit_above']}"
                  if refine["element_refit_above"] != ELEMENT_REFIT_ABOVE else "")
    if exact and refine.get("element_refit_above") is not None:
        # records from before these options existed read with width 1, one round, 4 fits, no site candidates
        width, rounds = refine.get("element_refit_width", 1), refine.get("element_refit_rounds", 1)
        fits = refine.get("element_refit_fits", 4)
        if width != REFIT_WIDTH:
            refit_flag += f" --element-refit-width {width}"
            title += f", element refit width {width}"
        if rounds != REFIT_ROUNDS:
            refit_flag += f" --element-refit-rounds {rounds}"
            title += f", {rounds} refit round{'s' if rounds > 1 else ''}"
        if fits != REFIT_FITS:
            refit_flag += f" --element-refit-fits {fits}"
            title += f", {fits} refit fits"
        if not refine.get("site_refit", False):
            refit_flag += " --no-site-refit"
            title += ", no site refit"
    if exact and refine["exact_fit_steps"] != EXACT_FIT_STEPS:
        refit_flag = f" --exact-fit-steps {refine['exact_fit_steps']}" + refit_flag
    skip = res.get("skip", 0)  # a second sample after the first crystals
    if skip:
        title += f", validation crystals {skip + 1}-{skip + res['n']}"
    if res.get("weights_label"):  # a record kept from weights shipped before the present ones
        title += f", {res['weights_label']}"
    lines = [f"## {title}", "",
             f"Command: `{res['command']}` (results/{name}.json); equivalent to `icsg reconstruct "
             f"../shared/data/perov_5/val.csv.gz{'' if refine else ' --no-refine'}"
             f"{' --cell-from coords' if res.get('cell_from') != 'latent' else ''}"
             f"{' --soft-steps 0' if refine and not refine.get('soft_steps') else ''}"
             f"{' --position-steps 0' if refine and not refine.get('position_steps') else ''}"
             f"{' --no-restart' if refine and 'restart_above' in refine and refine['restart_above'] is None else ''}"
             f"{refit_flag}`. "
             + (f"A second sample, after the first {skip} crystals. " if skip else "") +
             f"n = {res['n']}, decoded {res['n_decoded']}, {res['seconds_per_crystal'] * 1000:.0f} ms per crystal "
             "end to end on this machine "
             f"(encode, VAE, UNet on true and decoded maps, segmentation{', refinement' if refine else ''}, metrics)."
             + (f" Measured at {res['measured_at']}." if res.get("measured_at") else ""), "",
             ("Cell lengths of the decoded crystals: from the posterior mean by the ridge readout fitted on training "
              "codes (`icsg.generation.latent_cell`, `--cell-from latent`)." if res.get("cell_from") == "latent" else
              "Cell lengths of the decoded crystals: from the decoded coordinate channels (`--cell-from coords`, the "
              "paper's way)."),
             f"UNet averaged over {res.get('tta_rotations', 1)} exact rotation(s) of the box (`--tta`). "
             f"Site species: `{res.get('species_from', 'unet')}` (`fit` = the eq.-1 profile fit of "
             "icsg/segmentation/species_fit.py, on decoded maps combined with the UNet's class probabilities and "
             "with the sites left at their region centroids, on true maps the density alone with refined sites: "
             "`segmentation_for` and the species_reading section; `unet` = the paper's vote). The column *UNet on "
             "true M* runs the UNet + segmentation on the true maps (no VAE): the segmenter's share of the error. "
             "The column "
             "*decoded M', true S_B* segments the decoded maps with the encoder's own occupancy mask instead of the "
             "UNet's: what the decoded density and coordinates support when the regions are right (the VAE's "
             "share).", "",
             ("The column *icsg* reads the decoded maps as generation does: segmentation, then the round-trip "
              "refinement (`icsg.generation.consistency`: elements, sites and cell moved towards the crystal whose "
              f"code is closest to the posterior mean the map came from; {refine}); *segmentation only* is the same "
              "crystals before the refinement (`--no-refine`). Mean squared code distance left: "
              f"{f(res.get('latent_residual'), 5)}." if refine else "No round-trip refinement (`--no-refine`)."),
             "", *([f"The column *no restart* is the same crystals' first reading: before the "
                    f"{res['restarted']['crystals']} crystals still farther than {refine.get('restart_above')} from "
                    "their codes were read again from their segmentation (positions fitted first, no soft fit; "
                    f"`ConsistencyConfig.restart_above`); the second reading was nearer, and kept, for "
                    f"{res['restarted']['second_reading_kept']} of them.", ""] if nr else []),
             *([f"The column *no exact fit* is the same crystals before the last stage "
                f"(`ConsistencyConfig.exact_below`, `icsg.generation.pipeline.exact_fits`): positions and cell fitted "
                f"together through the encoder ({refine['exact_fit_steps']} steps), "
                f"{_exact_sentence(res['exact_fit'], refine)}", ""] if ne and res.get("exact_fit") else []),
             "| metric | icsg |" + (" no exact fit |" if ne else "") + (" no restart |" if nr else "")
             + " segmentation only | UNet on true M | decoded M', true S_B | paper |",
             "|---|---|" + ("---|" if ne else "") + ("---|" if nr else "") + "---|---|---|---|"]
    for label, key, paper in rows:
        lines.append(f"| {label} | {f(res.get(key))} |" + (f" {f(ne.get(key)) if key in ne else '-'} |" if ne else "")
                     + (f" {f(nr.get(key)) if key in nr else '-'} |" if nr else "")
                     + f" {f(so.get(key)) if key in so else '-'} | "
                     f"{f(tm.get(key)) if key in tm else '-'} | {f(to.get(key)) if key in to else '-'} | {paper} |")
    by_el = res.get("unet_recall_by_element")
    if by_el:
        order = sorted(by_el, key=lambda e: -by_el[e]["voxel_share"])
        poor = [e for e in order if by_el[e]["recall"] < 0.5 and by_el[e]["read_as"]]
        lines += ["", "UNet non-zero recall on the true maps by element (share of the atom voxels in brackets): "
                  + ", ".join(f"{e} {by_el[e]['recall']:.2f} ({100 * by_el[e]['voxel_share']:.1f} %)" for e in order)
                  + ". Below 0.5, most often read as: "
                  + (", ".join(f"{e} → {by_el[e]['read_as']} ({by_el[e]['read_as_share']:.2f})" for e in poor)
                     or "none") + "."]
    misses = [c for c in res.get("crystals", []) if c.get("read") and not c["match"]]
    if misses:  # records from session 19 on list every crystal
        lines += ["", f"Not matched ({len(misses)}; true formula → reading, code distance): "
                  + "; ".join(f"{c['id']} {c['formula']} → {c['read']} ({c['code_distance']:.1e})" for c in misses)
                  + "."]
    for name in ("unet", "vae"):
        t = (res.get("training") or {}).get(name) or {}
        secs = t.get("epoch_seconds") or []
        if secs:
            lines.append("")
            lines.append(f"{name} training: {t.get('epochs_done')} epochs, {np.mean(secs):.0f} s per epoch "
                         f"(shared cores), best validation loss {t.get('best'):.4f} at epoch {t.get('best_epoch')}.")
    # the slices image is redrawn by every run, so it belongs to the present weights' record only
    lines += (["", "![slices](results/reconstruction_slices.png)", ""]
              if not res.get("weights_label") and not skip else [""])
    return "\n".join(lines)


def _exact_sentence(c: dict, refine: dict) -> str:
    text = (f"{c['exact_first']} of {c['crystals']} crystals then lay closer than {refine['exact_below']} to their "
            "codes (reproduced: they keep the fitted cell)")
    if refine.get("element_refit_above") is not None:
        rounds, sites = refine.get("element_refit_rounds", 1), refine.get("site_refit", False)
        change = "one site's element changed" + (", one site removed or two close sites merged" if sites else "")
        text += (f"; the {c['refit']} still at least {refine['element_refit_above']} away were tried with {change} "
                 f"(neighbours ±{refine.get('element_refit_width', 1)} in Z; the "
                 f"{refine.get('element_refit_fits')} nearest candidates fitted"
                 + (f"; up to {rounds} rounds, each from the crystals the last improved" if rounds > 1 else "")
                 + f"), and a candidate replaced {c['refit_kept']} readings")
    return text + (f"; {c['exact']} crystals reproduced their codes in the end. The others keep the cell they were "
                   "read with.")


if __name__ == "__main__":
    sys.exit(main())
