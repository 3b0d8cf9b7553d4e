"""A learned prior over codes: conditional flow matching on the training crystals' codes.

A Gaussian per property bin (``icsg.generation.latent_prior``) puts most of its mass between the codes
of real crystals, where the readout heads answer compositions no crystal of the data has. A flow learns
the distribution itself: a velocity field v(x, t, c) is trained so that integrating dx/dt = v from
x(0) ~ N(0, I) to t = 1 lands on the codes, by regressing v on x1 − x0 along the straight
paths x_t = (1 − t)·x0 + t·x1 (rectified flow / conditional flow matching, Lipman et al. 2023; Liu et
al. 2023). The condition c is the property bin one-hot and the standardised property value; with
probability ``p_uncond`` it is dropped during training, so sampling can use classifier-free guidance
v = v(x, t, ∅) + w·(v(x, t, c) − v(x, t, ∅)) to follow the requested property more closely.

The flow runs in the whitened coordinates of the standardised codes' top principal components
(``FlowPriorConfig.pca_dims``): the codes are nearly low-rank, and a flow over all 288 dimensions left its
samples 1.6 times as far from the nearest training code (median, standardised codes) as held-out crystals'
codes are; on 64 components, 1.15 times.

The network is a small MLP of our own (torch); weights are a plain state dict (``flow_prior.pt``,
loaded with ``weights_only=True``) beside a JSON description (``flow_prior.json``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from icsg.errors import WeightsError

FLOW_FILE = "flow_prior"


@dataclass(frozen=True)
class FlowPriorConfig:
    """Args:
        dim: code size.
        n_bins: property bins of the one-hot condition.
        hidden, depth: width and number of hidden layers of the velocity MLP.
        steps, batch_size, lr: training (Adam, cosine-decayed learning rate).
        p_uncond: share of training pairs whose condition is dropped (for guidance).
        guidance: w of classifier-free guidance at sampling (1 = the conditional field alone).
        sample_steps: Euler steps from t = 0 to 1.
        pca_dims: the flow runs on the codes' top principal components (of the standardised codes), whitened;
            the other directions stay at the mean. The codes are nearly low-rank (99 % of the variance in ~56
            of 288 dimensions), and a flow over all of them leaves every sample slightly off in the hundreds
            of directions where the codes hardly vary: off the codes' manifold, into readings no crystal of
            the data has. 0 = all standardised dimensions.
    """

    dim: int = 288
    n_bins: int = 10
    hidden: int = 512
    depth: int = 3
    steps: int = 24000
    batch_size: int = 256
    lr: float = 1e-3
    p_uncond: float = 0.1
    guidance: float = 2.0
    sample_steps: int = 40
    pca_dims: int = 64

    @property
    def flow_dim(self) -> int:
        return self.pca_dims or self.dim


def build_velocity_net(cfg: FlowPriorConfig):
    """MLP [x (dim), t features (16), condition (n_bins + 2)] -> velocity (dim)."""
    import torch

    layers, width = [], cfg.flow_dim + 16 + cfg.n_bins + 2
    for _ in range(cfg.depth):
        layers += [torch.nn.Linear(width, cfg.hidden), torch.nn.SiLU()]
        width = cfg.hidden
    layers.append(torch.nn.Linear(width, cfg.flow_dim))
    return torch.nn.Sequential(*layers)


def _t_features(t):
    import torch

    k = torch.arange(1, 9, dtype=t.dtype, device=t.device)
    return torch.cat([torch.sin(np.pi * k * t[:, None]), torch.cos(np.pi * k * t[:, None])], dim=1)


class FlowPrior:
    """A trained flow prior: ``sample(n, rng, condition=k)`` or ``sample(n, rng, value=v)``."""

    def __init__(self, cfg: FlowPriorConfig, net, stats: dict, axes: np.ndarray | None = None):
        self.cfg, self.net, self.stats = cfg, net, stats
        self.mean = np.asarray(stats["code_mean"], np.float32)
        self.std = np.asarray(stats["code_std"], np.float32)
        # (flow_dim, dim): whitened principal axes, flow space -> standardised codes (identity without PCA)
        self.axes = np.asarray(axes, np.float32) if cfg.pca_dims else np.eye(cfg.dim, dtype=np.float32)
        if self.axes.shape != (cfg.flow_dim, cfg.dim):
            raise ValueError(f"principal axes must be ({cfg.flow_dim}, {cfg.dim}), got {self.axes.shape}")
        self.edges = np.asarray(stats["edges"], np.float64)
        self.bin_values = [np.asarray(v, np.float64) for v in stats["bin_values"]]

    def to_flow(self, codes: np.ndarray) -> np.ndarray:
        """Codes (n, dim) -> the flow's coordinates (n, flow_dim)."""
        z = (np.asarray(codes, np.float32) - self.mean) / self.std
        return (z @ self.axes.T / np.sum(self.axes**2, axis=1)[None]).astype(np.float32)

    @property
    def n_bins(self) -> int:
        return self.cfg.n_bins

    def condition(self, bins: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(n, n_bins + 2): one-hot bin, standardised value, 1 (= conditioned)."""
        v = (np.asarray(values, np.float64) - self.stats["value_mean"]) / self.stats["value_std"]
        return np.concatenate([np.eye(self.n_bins)[np.asarray(bins, int)], v[:, None], np.ones((len(v), 1))],
                              axis=1).astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0, condition: int | None = None,
               value: float | None = None) -> np.ndarray:
        """(n, dim) float32 codes for property bin ``condition`` (values drawn from that bin's training values)
        or for the property ``value`` (its bin with it)."""
        import torch

        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if value is not None:
            k = int(np.searchsorted(self.edges, value, side="right"))
            values = np.full(n, float(value))
        elif condition is not None and 0 <= int(condition) < self.n_bins:
            k = int(condition)
            values = rng.choice(self.bin_values[k], size=n)
        else:
            raise ValueError(f"this prior needs a property bin 0..{self.n_bins - 1} or a value; got {condition!r}")
        c = torch.from_numpy(self.condition(np.full(n, k), values))
        x = torch.from_numpy((temperature * rng.standard_normal((n, self.cfg.flow_dim))).astype(np.float32))
        h = 1.0 / self.cfg.sample_steps
        w = self.cfg.guidance
        self.net.eval()
        with torch.no_grad():
            for i in range(self.cfg.sample_steps):
                t = torch.full((n,), i * h)
                v = self._velocity(x, t, c)
                if w != 1.0:
                    v = self._velocity(x, t, torch.zeros_like(c)) * (1 - w) + w * v
                x = x + h * v
        return ((x.numpy() @ self.axes) * self.std + self.mean).astype(np.float32)

    def _velocity(self, x, t, c):
        import torch

        return self.net(torch.cat([x, _t_features(t), c], dim=1))


def train_flow_prior(codes: np.ndarray, bins: np.ndarray, values: np.ndarray, edges, cfg: FlowPriorConfig,
                     seed: int = 0, progress: bool = True) -> tuple[FlowPrior, dict]:
    """Fit the flow to (N, dim) codes with their property bins (N,) and values (N,) (NaN: the bin's median)."""
    import torch
    from tqdm.auto import tqdm

    codes = np.asarray(codes, np.float32)
    values = np.asarray(values, np.float64)
    if len(codes) < 64 or codes.shape[1] != cfg.dim:
        raise ValueError(f"a flow prior needs >= 64 codes of size {cfg.dim}, got {codes.shape}")
    if not 0 <= cfg.pca_dims <= cfg.dim:
        raise ValueError(f"pca_dims must lie in 0..{cfg.dim} (the code size), got {cfg.pca_dims}")
    bins = np.asarray(bins, int)
    for k in range(cfg.n_bins):  # a missing value takes its bin's median, or the overall one
        miss = (bins == k) & ~np.isfinite(values)
        ok = (bins == k) & np.isfinite(values)
        values[miss] = np.median(values[ok]) if ok.any() else np.nanmedian(values)
    stats = {"code_mean": codes.mean(0).tolist(), "code_std": (codes.std(0) + 1e-6).tolist(),
             "value_mean": float(values.mean()), "value_std": float(values.std() + 1e-9),
             "edges": [float(e) for e in edges],
             "bin_values": [values[bins == k].tolist() or [float(values.mean())] for k in range(cfg.n_bins)]}
    axes = None
    if cfg.pca_dims:
        ev, vec = np.linalg.eigh(np.cov(((codes - codes.mean(0)) / np.asarray(stats["code_std"])).T))
        top = np.argsort(ev)[::-1][:cfg.pca_dims]
        axes = (vec[:, top] * np.sqrt(np.maximum(ev[top], 1e-12))).T
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_velocity_net(cfg)
    prior = FlowPrior(cfg, net, stats, axes)
    x1_all = torch.from_numpy(prior.to_flow(codes))
    c_all = torch.from_numpy(prior.condition(bins, values))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    losses = []
    net.train()
    for step in tqdm(range(cfg.steps), desc="flow prior", disable=not progress, mininterval=2):
        idx = torch.from_numpy(rng.integers(0, len(codes), cfg.batch_size))
        x1, c = x1_all[idx], c_all[idx].clone()
        c[torch.from_numpy(rng.random(cfg.batch_size) < cfg.p_uncond)] = 0.0
        x0 = torch.randn_like(x1)
        t = torch.rand(cfg.batch_size)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = ((prior._velocity(xt, t, c) - (x1 - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    return prior, {"final_loss": float(np.mean(losses[-200:])), "codes": int(len(codes))}


def save_flow_prior(prior: FlowPrior, weights_dir: str | os.PathLike, extra: dict | None = None) -> Path:
    """WEIGHTS/flow_prior.pt (state dict, with the principal axes as ``pca_axes``) and flow_prior.json (config,
    standardisation, ``extra``), atomically."""
    import torch

    from icsg.io import atomic_path, atomic_write_json
    from icsg.pretrained import sha256

    out = Path(weights_dir)
    with atomic_path(out / f"{FLOW_FILE}.pt", suffix=".pt") as tmp:
        state = prior.net.state_dict()
        if prior.cfg.pca_dims:
            state["pca_axes"] = torch.from_numpy(prior.axes)
        torch.save(state, tmp)
    atomic_write_json(out / f"{FLOW_FILE}.json", {"kind": "flow_prior", "config": asdict(prior.cfg),
                                                  "stats": prior.stats, "sha256": sha256(out / f"{FLOW_FILE}.pt"),
                                                  **(extra or {})})
    return out / f"{FLOW_FILE}.pt"


def load_flow_prior(weights_dir: str | os.PathLike, dim: int | None = None) -> FlowPrior:
    """The flow prior of a weights folder, or WeightsError naming the missing or mismatched file."""
    import torch

    from icsg.pretrained import read_description

    root = Path(weights_dir)
    meta = read_description(root / f"{FLOW_FILE}.json", "run 'icsg fit-latent-prior DATA'")
    cfg = FlowPriorConfig(**{"pca_dims": 0, **meta["config"]})  # priors written before PCA: all dimensions
    if dim is not None and cfg.dim != dim:
        raise WeightsError(f"{root / FLOW_FILE}.json: a prior over {cfg.dim}-dimensional codes, the codec has {dim}")
    if not (root / f"{FLOW_FILE}.pt").exists():
        raise WeightsError(f"{root / FLOW_FILE}.pt: flow prior weights missing")
    net = build_velocity_net(cfg)
    try:
        state = torch.load(root / f"{FLOW_FILE}.pt", weights_only=True, map_location="cpu")
        axes = state.pop("pca_axes", None)
        net.load_state_dict(state)
        return FlowPrior(cfg, net, meta["stats"], None if axes is None else axes.numpy())
    except (RuntimeError, OSError, ValueError) as exc:
        raise WeightsError(f"{root / FLOW_FILE}.pt: cannot load ({str(exc)[:200]})") from None
