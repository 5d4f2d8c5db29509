"""A character-level language model: embedding -> stacked LSTM/GRU/RNN -> linear over the alphabet, and sampling
from it with temperature and top-k."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders.rnn import CellType, State, make_rnn


def detach_state(state: State) -> State:
    """Cut the graph at a window boundary (truncated BPTT): the values carry on, the gradients stop."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class CharRNN(nn.Module):
    """(B, T) character ids (+ the state carried from the previous window) -> (B, T, vocab_size) logits, new state.

    Args:
        vocab_size: alphabet size incl. the unknown symbol (from the datamodule).
        embed_dim: character embedding size.
        hidden_dim: RNN state size.
        cell: lstm, gru or rnn.
        num_layers: stacked RNN layers.
        dropout: on the embeddings, between stacked layers and before the output layer.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 256, cell: CellType = "lstm",
                 num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = make_rnn(cell, embed_dim, hidden_dim, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def forward(self, chars: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, state = self.rnn(self.dropout(self.embed(chars)), state)  # (B, T, H)
        return self.head(self.dropout(out)), state

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 banned: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(B, P) prompt ids -> (B, length) sampled ids that follow it; `banned` (the unknown symbol) is never drawn."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {temperature}); use top_k 1 for greedy decoding")
        logits, state = self(prompt)
        last, out = logits[:, -1], []  # (B, V) the distribution of the first new character
        for _ in range(length):
            scores = last / temperature
            if banned is not None:
                scores[:, banned] = float("-inf")
            if top_k is not None and top_k < scores.shape[-1]:
                kth = scores.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
                scores = scores.masked_fill(scores < kth, float("-inf"))
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator)  # (B, 1)
            out.append(nxt)
            logits, state = self(nxt, state)
            last = logits[:, -1]
        return torch.cat(out, dim=1) if out else prompt.new_zeros(prompt.shape[0], 0)
