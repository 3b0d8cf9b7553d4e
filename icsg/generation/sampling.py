"""Latent sampling: random per condition, around a base crystal, linear and spherical interpolation."""

from __future__ import annotations

import numpy as np


def sample_prior(n: int, latent_dim: int, rng: np.random.Generator) -> np.ndarray:
    """z ~ N(0, I), shape (n, latent_dim)."""
    return rng.standard_normal((n, latent_dim)).astype(np.float32)


def sample_around(mu: np.ndarray, n: int, variance: float, rng: np.random.Generator) -> np.ndarray:
    """z ~ N(μ_base, σ² I) (paper σ² = 0.5)."""
    if variance < 0:
        raise ValueError(f"variance must be >= 0, got {variance}")
    mu = np.asarray(mu, dtype=np.float32).reshape(1, -1)
    return (mu + np.sqrt(variance) * rng.standard_normal((n, mu.shape[1]))).astype(np.float32)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(1 - t)·a + t·b for each t: (len(t), dim)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1 - t) * np.asarray(a)[None] + t * np.asarray(b)[None]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (iMatGen supplement eq. S4):

        z(t) = sin((1 - t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b,   cos Ω = â·b̂.

    Falls back to linear interpolation when a and b are (anti)parallel within 1e-6.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[:, None]
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t[:, 0])
    return ((np.sin((1 - t) * omega) * a[None] + np.sin(t * omega) * b[None]) / np.sin(omega)).astype(np.float32)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str = "linear") -> np.ndarray:
    """``steps`` points from a to b inclusive."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = np.linspace(0.0, 1.0, steps)
    if method == "linear":
        return lerp(a, b, t)
    if method == "slerp":
        return slerp(a, b, t)
    raise ValueError(f"unknown interpolation method '{method}' (linear or slerp)")
