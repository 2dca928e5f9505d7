"""Streaming float64 mean / covariance / correlation of neuron activations.

Why streaming: correlations of plateau neurons over rare positions (claim 2) are needed on
millions of positions, which never fit in memory at once. Chunks are merged with the parallel
update of Chan, Golub & LeVeque (exact up to float64 rounding, no catastrophic cancellation),
so accumulators from separate batches or workers can be combined with `merge`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


class RunningMoments:
    """Count, mean and centred cross-products (M2) of a neuron subset.

    `update(acts, mask)` takes activations [n, d_mlp] (or [B, T, d_mlp]) of a chunk of
    positions and an optional boolean position mask (e.g. the rare-position mask of those rows)."""

    def __init__(self, n_features: int | None = None, neurons: Sequence[int] | None = None):
        if neurons is not None:
            self.neurons = np.asarray(neurons, dtype=np.int64)
            k = len(self.neurons)
        elif n_features is not None:
            self.neurons, k = None, int(n_features)
        else:
            raise ValueError("give n_features or neurons")
        self.count = 0
        self.mean = np.zeros(k)
        self.m2 = np.zeros((k, k))

    def __repr__(self) -> str:
        return f"RunningMoments({len(self.mean)} neurons, {self.count} positions)"

    def update(self, acts: Any, mask: Any = None) -> "RunningMoments":
        x = _to_numpy(acts)
        x = x.reshape(-1, x.shape[-1])  # [B, T, d_mlp] with a [B, T] mask works too
        if mask is not None:
            x = x[np.asarray(_to_numpy(mask), dtype=bool).reshape(-1)]
        if self.neurons is not None:
            x = x[:, self.neurons]
        if x.shape[1] != len(self.mean):
            raise ValueError(f"chunk has {x.shape[1]} columns, accumulator {len(self.mean)}")
        if len(x):
            mean = x.mean(0)
            xc = x - mean
            self._combine(len(x), mean, xc.T @ xc)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        """A new accumulator equal to having seen both streams."""
        if len(other.mean) != len(self.mean):
            raise ValueError("cannot merge accumulators of different neuron subsets")
        out = RunningMoments(n_features=len(self.mean))
        out.neurons = self.neurons
        out.count, out.mean, out.m2 = self.count, self.mean.copy(), self.m2.copy()
        if other.count:
            out._combine(other.count, other.mean, other.m2)
        return out

    def cov(self, ddof: int = 1) -> np.ndarray:
        if self.count <= ddof:
            return np.full_like(self.m2, np.nan)
        return self.m2 / (self.count - ddof)

    @property
    def var(self) -> np.ndarray:
        return np.diag(self.cov())

    def corr(self) -> np.ndarray:
        """Pearson correlation; NaN rows/columns for neurons with zero variance."""
        sd = np.sqrt(np.diag(self.m2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.m2 / np.outer(sd, sd)
        out[sd == 0, :] = np.nan
        out[:, sd == 0] = np.nan
        return out
