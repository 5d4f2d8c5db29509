"""Scheduled sampling (Bengio et al. 2015): how often a decoder is fed its own prediction instead of the truth."""
from __future__ import annotations

import math
from typing import Literal

SamplingSchedule = Literal["linear", "inverse_sigmoid", "exponential"]


def sampling_probability(
    progress: float,
    schedule: SamplingSchedule = "inverse_sigmoid",
    start: float = 0.0,
    end: float = 1.0,
    max_prob: float = 1.0,
    steepness: float = 10.0,
) -> float:
    """The probability of feeding the model its own previous prediction instead of the truth.

    `progress` in [0, 1] is the fraction of training done. The probability is 0 up to `start`, `max_prob` from
    `end` on, and in between grows as `schedule` says, each normalised to meet both ends exactly:
    linear; inverse_sigmoid (slow, fast, slow: Bengio et al. 2015); exponential (fast first, then levelling off).
    `steepness` shapes the last two.
    """
    if not 0.0 <= start < end:
        raise ValueError(f"scheduled sampling needs 0 <= start < end, got start={start}, end={end}")
    u = min(1.0, max(0.0, (progress - start) / (end - start)))
    if schedule == "linear":
        p = u
    elif schedule == "inverse_sigmoid":
        lo, hi = _sigmoid(-steepness / 2), _sigmoid(steepness / 2)
        p = (_sigmoid(steepness * (u - 0.5)) - lo) / (hi - lo)
    elif schedule == "exponential":
        p = (1.0 - math.exp(-steepness * u)) / (1.0 - math.exp(-steepness))
    else:
        raise ValueError(f"unknown sampling schedule {schedule!r}; choose linear, inverse_sigmoid or exponential")
    return max_prob * min(1.0, max(0.0, p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))
