"""Means with seeded percentile-bootstrap intervals over stories.

Stories, not panels, are resampled: panels of one story share a seed plan and a
character, so they are not independent. A fixed seed makes every interval
reproduce exactly. With fewer than two stories there is no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from storyd.eval import protocol


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float | None  # the interval's ends; None with fewer than two stories
    high: float | None
    n: int  # stories that had a value

    def as_dict(self) -> dict:
        return {"mean": _round(self.mean), "low": _round(self.low), "high": _round(self.high), "n": self.n}


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def _interval(means: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - protocol.CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(values, *, resamples: int = protocol.BOOTSTRAP_RESAMPLES,
              seed: int = protocol.BOOTSTRAP_SEED) -> Estimate:
    """Mean of the non-NaN ``values`` (one per story) and its percentile-bootstrap interval."""
    data = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(data) == 0:
        return Estimate(float("nan"), None, None, 0)
    if len(data) < 2:
        return Estimate(float(data.mean()), None, None, len(data))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    low, high = _interval(means)
    return Estimate(float(data.mean()), low, high, len(data))


def paired_difference(a: dict[str, float], b: dict[str, float], *, resamples: int = protocol.BOOTSTRAP_RESAMPLES,
                      seed: int = protocol.BOOTSTRAP_SEED) -> Estimate:
    """Mean of ``b[story] - a[story]`` over stories both score, with a bootstrap interval.

    Pairing removes the spread between stories, so a real difference shows up with
    fewer stories than two overlapping intervals would need.
    """
    shared = sorted(k for k in a.keys() & b.keys() if not (math.isnan(a[k]) or math.isnan(b[k])))
    return bootstrap([b[k] - a[k] for k in shared], resamples=resamples, seed=seed)
