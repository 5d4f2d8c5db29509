"""The recurrent building blocks every decoder shares: one constructor for LSTM/GRU/plain-RNN stacks,
a packed run over variable-length sequences, and poolings for many-to-one heads."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from encoders.base import Encoded, lengths_to_mask

CellType = Literal["lstm", "gru", "rnn"]
_RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# LSTM state is (h, c); GRU/RNN state is h. Each h/c: (num_layers * num_directions, B, H).
State = Tensor | tuple[Tensor, Tensor]


def make_rnn(
    cell: CellType,
    input_size: int,
    hidden_dim: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """A fused cuDNN/MKL-friendly stack; the same weights are applied at every step (parameter sharing over time)."""
    if cell not in _RNN_CLASSES:
        raise ValueError(f"unknown RNN cell {cell!r}; choose one of {sorted(_RNN_CLASSES)}")
    return _RNN_CLASSES[cell](
        input_size,
        hidden_dim,
        num_layers=num_layers,
        # torch applies dropout between stacked layers only; it warns when there is a single layer.
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def run_rnn(rnn: nn.RNNBase, x: Tensor, lengths: Tensor | None, state: State | None = None) -> tuple[Tensor, State]:
    """Run `rnn` over (B, T, D) inputs; with `lengths`, pack so padded steps are never read.

    Returns outputs (B, T, H * num_directions), zero on padded steps, and the final state. Packing makes a
    backward direction start at each sample's own last valid step rather than at the padding.
    """
    if lengths is None:
        return rnn(x, state)
    packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


class RNNSequenceDecoder(nn.Module):
    """Many-to-many: a (stacked, optionally bidirectional) RNN over encoder steps -> per-step hidden states."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        cell: CellType = "lstm",
        num_layers: int = 2,
        dropout: float = 0.0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.rnn = make_rnn(cell, in_dim, hidden_dim, num_layers, dropout, bidirectional)
        self.out_dim = hidden_dim * (2 if bidirectional else 1)

    def forward(self, encoded: Encoded) -> Encoded:
        out, _ = run_rnn(self.rnn, encoded.seq, encoded.lengths)
        return Encoded(out, encoded.lengths)


PoolingType = Literal["last", "mean", "attention"]


class SequencePooling(nn.Module):
    """Many-to-one: (B, T, D) steps with lengths -> (B, D) one vector per sequence.

    last:      the state at each sample's last valid step (for a bidirectional RNN, pass `bidirectional=True`:
               the forward half is read at the last valid step and the backward half at step 0, where it ends).
    mean:      the average over valid steps.
    attention: a learned softmax weighting of the valid steps.
    """

    def __init__(self, dim: int, mode: PoolingType = "last", bidirectional: bool = False) -> None:
        super().__init__()
        if mode not in ("last", "mean", "attention"):
            raise ValueError(f"unknown pooling {mode!r}; choose last, mean or attention")
        self.mode = mode
        self.bidirectional = bidirectional
        # no bias: the softmax over steps cancels any constant added to every score (it would never learn)
        self.score = nn.Linear(dim, 1, bias=False) if mode == "attention" else None

    def forward(self, encoded: Encoded) -> Tensor:
        seq, lengths = encoded
        B, T, D = seq.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=seq.device)
        mask = lengths_to_mask(lengths, T)  # (B, T)
        if self.mode == "last":
            last = seq[torch.arange(B, device=seq.device), (lengths - 1).clamp(min=0)]  # (B, D)
            if self.bidirectional:
                half = D // 2
                return torch.cat([last[:, :half], seq[:, 0, half:]], dim=-1)
            return last
        if self.mode == "mean":
            weights = mask.float() / lengths.clamp(min=1)[:, None].float()
        else:
            scores = self.score(seq).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
            weights = scores.softmax(dim=-1)
        return torch.einsum("bt,btd->bd", weights, seq)
