"""Additive (Bahdanau) soft attention over encoder steps."""
from __future__ import annotations

from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    """score(q, k_i) = v^T tanh(W_k k_i + W_q q); weights = softmax over valid i; context = sum_i w_i k_i.

    Keys are projected once per image with `project_keys` and reused at every step.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 128) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_dim, attn_dim)
        self.query_proj = nn.Linear(query_dim, attn_dim, bias=False)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """(B, N, K) -> (B, N, A)."""
        return self.key_proj(keys)

    def forward(self, query: Tensor, keys: Tensor, projected_keys: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """query (B, L, Q), keys (B, N, K), projected (B, N, A), mask (B, N) -> context (B, L, K), weights (B, L, N)."""
        # (B, L, 1, A) + (B, 1, N, A) -> scores (B, L, N)
        scores = self.score((self.query_proj(query)[:, :, None] + projected_keys[:, None]).tanh()).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        return weights @ keys, weights
