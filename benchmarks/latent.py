"""Latent space of the shipped Cond-DFC-VAE (paper Figs. 2-3).

    python benchmarks/latent.py [--n 1000]

Encodes validation perovskites (posterior means) and writes, under benchmarks/results/:
latent_kde.png (KDE of every latent dimension against N(0, 1)), latent_tsne.png
(t-SNE coloured by the conditioning property and by B-site element group as a
structure-type proxy), and latent_interpolation.png (density mid-slices along a
linear and a slerp path between two crystals under three conditions).
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

from icsg.data.dataset import property_bin  # noqa: E402
from icsg.data.filters import standardise  # noqa: E402
from icsg.data.sources import iter_source  # noqa: E402
from icsg.generation.sampling import interpolate  # noqa: E402
from icsg.grid import GridSpec  # noqa: E402
from icsg.pretrained import load_vae  # noqa: E402
from icsg.representation.density import encode  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--weights", default=str(HERE.parent / "weights"))
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde
    from sklearn.manifold import TSNE

    vae, vm = load_vae(a.weights)
    spec = GridSpec.from_dict(vm["grid"])
    cond = vm["condition"]
    recs = [r for r in iter_source(str(DATA / "val.csv.gz"), limit=a.n) if r.structure is not None]
    xs, cs, props, groups = [], [], [], []
    for r in recs:
        s = standardise(r.structure, r.id)
        e = encode(s, spec)
        xs.append(np.concatenate([e.density[..., None], e.coords], -1))
        v = r.properties[cond["property"]]
        cs.append(int(property_bin([v], np.array(cond["edges"]))[0]))
        props.append(v)
        # B site = the site at the cell centre in perov_5
        centre = min(s, key=lambda site: np.linalg.norm(site.frac_coords - 0.5))
        groups.append(centre.specie.group)
    x = np.stack(xs).astype(np.float32)
    c = np.eye(cond["n_bins"], dtype=np.float32)[cs]
    mu, logvar = vae.encoder.predict([x, c], batch_size=32, verbose=0)
    mu = np.asarray(mu)
    out = HERE / "results"
    out.mkdir(exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(-4, 4, 200)
    for d in range(mu.shape[1]):
        if np.std(mu[:, d]) > 1e-6:
            ax.plot(grid, gaussian_kde(mu[:, d])(grid), color="tab:blue", alpha=0.08, lw=0.8)
    ax.plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
    ax.set_xlabel("latent value (posterior mean)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latent_kde.png", dpi=90)
    plt.close(fig)

    emb = TSNE(n_components=2, random_state=0, init="pca", perplexity=30).fit_transform(mu)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    sc = axes[0].scatter(emb[:, 0], emb[:, 1], c=props, s=5, cmap="viridis")
    fig.colorbar(sc, ax=axes[0], label=cond["property"])
    axes[0].set_title("t-SNE of μ, coloured by property", fontsize=9)
    sc = axes[1].scatter(emb[:, 0], emb[:, 1], c=groups, s=5, cmap="tab20")
    fig.colorbar(sc, ax=axes[1], label="B-site group")
    axes[1].set_title("t-SNE of μ, coloured by B-site group", fontsize=9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "latent_tsne.png", dpi=90)
    plt.close(fig)

    i, j = 0, int(np.argmax(np.linalg.norm(mu - mu[0], axis=1)))
    steps = 7
    conds = [0, cond["n_bins"] // 2, cond["n_bins"] - 1]
    fig, axes = plt.subplots(2 * len(conds), steps, figsize=(1.6 * steps, 1.7 * 2 * len(conds)))
    for row, (method, k) in enumerate([(m, k) for k in conds for m in ("linear", "slerp")]):
        z = interpolate(mu[i], mu[j], steps, method)
        cc = np.tile(np.eye(cond["n_bins"], dtype=np.float32)[k], (steps, 1))
        dens = np.asarray(vae.decoder.predict([z, cc], verbose=0))[..., 0]
        for t in range(steps):
            axes[row, t].imshow(dens[t, :, :, spec.size // 2].T, origin="lower", cmap="magma")
            axes[row, t].axis("off")
        axes[row, 0].set_title(f"{method}, decile {k}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out / "latent_interpolation.png", dpi=80)
    plt.close(fig)

    stats = {"n": len(recs), "mean_of_means": float(mu.mean()), "mean_std": float(mu.std(0).mean()),
             "mean_posterior_var": float(np.exp(logvar).mean()),
             "endpoints": [recs[i].id, recs[j].id], "command": "python benchmarks/latent.py"}
    (out / "latent.json").write_text(json.dumps(stats, indent=2))
    update_section(HERE / "RESULTS.md", "latent", "\n".join([
        "## Latent space (paper Figs. 2-3)", "",
        f"Command: `python benchmarks/latent.py` on {stats['n']} perov_5 validation crystals. Posterior means have "
        f"mean {stats['mean_of_means']:.3f} and per-dimension std {stats['mean_std']:.3f} on average "
        f"(paper: roughly unit Gaussian per dimension); mean posterior variance {stats['mean_posterior_var']:.3f}.", "",
        "![kde](results/latent_kde.png)", "", "![tsne](results/latent_tsne.png)", "",
        f"Interpolations between {recs[i].id} and {recs[j].id} under deciles {conds} (density mid-slices):", "",
        "![interpolation](results/latent_interpolation.png)", ""]))
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
