"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on sampled captions with the metric as reward.

For K captions sampled per image, the loss is -(r - b) * log p(caption), summed over its tokens and averaged over
all sampled tokens, so a sample better than the baseline b becomes more likely and a worse one less. Baselines:

- greedy: the reward of the image's greedy caption (the model at test time), as in the paper;
- mean: the mean reward of the image's other K - 1 samples (Luo 2020, "a better variant of SCST"), no extra decode.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScstBaseline = Literal["greedy", "mean"]


def scst_baseline(rewards: Tensor, kind: ScstBaseline, greedy_rewards: Tensor | None = None) -> Tensor:
    """rewards (B, K) of K samples per image -> baseline (B, K) each sample's reward is compared to."""
    B, K = rewards.shape
    if kind == "greedy":
        if greedy_rewards is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        return greedy_rewards.view(B, 1).expand(B, K)
    if kind == "mean":
        if K < 2:
            raise ValueError("the mean baseline needs at least two samples per image (--model.scst_samples)")
        return (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)  # leave-one-out: not the sample's own reward
    raise ValueError(f"unknown SCST baseline {kind!r}; choose greedy or mean")


def policy_gradient_loss(log_probs: Tensor, mask: Tensor, advantage: Tensor) -> Tensor:
    """log_probs (N, L) of the sampled tokens (with autograd), mask (N, L) of tokens in each caption, advantage
    (N,) = reward - baseline -> scalar loss, a mean over all sampled tokens."""
    weighted = -(advantage.detach()[:, None] * log_probs) * mask
    return weighted.sum() / mask.sum().clamp(min=1)
