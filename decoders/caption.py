"""One-to-many: an RNN that writes a token sequence conditioned on image features."""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from decoders.rnn import CellType, State, make_rnn
from encoders.base import Encoded, lengths_to_mask

ConditioningType = Literal["init", "inject", "both"]


class Generated(NamedTuple):
    tokens: Tensor   # (B, L) token ids, `pad_id` after each sequence's <eos>
    lengths: Tensor  # (B,) tokens before <eos> (the <eos> itself not counted)


class CaptionDecoder(nn.Module):
    """LSTM/GRU/RNN language model conditioned on an image.

    conditioning:
      init   - the image vector sets the initial hidden (and cell) state ("init-inject");
      inject - the image vector is concatenated to every input embedding ("par-inject");
      both   - both of the above.
    Training is teacher-forced: `forward` takes the shifted-right targets (<bos> w1 .. wn) and runs the
    whole sequence through one fused `nn.LSTM`/`nn.GRU` call. `step` is the same network one token at a
    time, used by generation (and scheduled sampling).
    """

    def __init__(
        self,
        in_dim: int,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        cell: CellType = "lstm",
        num_layers: int = 1,
        dropout: float = 0.0,
        conditioning: ConditioningType = "both",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if conditioning not in ("init", "inject", "both"):
            raise ValueError(f"unknown conditioning {conditioning!r}; choose init, inject or both")
        self.cell, self.num_layers, self.hidden_dim = cell, num_layers, hidden_dim
        self.conditioning = conditioning
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.inject = conditioning in ("inject", "both")
        self.image_to_input = nn.Linear(in_dim, embed_dim) if self.inject else None
        # One projection produces h0 (and c0 for an LSTM) for every layer.
        n_states = 2 if cell == "lstm" else 1
        self.image_to_state = (
            nn.Linear(in_dim, n_states * num_layers * hidden_dim) if conditioning in ("init", "both") else None
        )
        self.rnn = make_rnn(cell, embed_dim * (2 if self.inject else 1), hidden_dim, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def image_vector(self, encoded: Encoded) -> Tensor:
        """(B, T, D) encoder steps -> (B, D): the mean over valid steps (T=1 for a pooled image)."""
        seq, lengths = encoded
        if lengths is None:
            return seq.mean(dim=1)
        mask = lengths_to_mask(lengths, seq.shape[1]).unsqueeze(-1)  # (B, T, 1)
        return (seq * mask).sum(1) / lengths.clamp(min=1)[:, None]

    def initial_state(self, image: Tensor) -> State | None:
        """(B, D) image vector -> RNN state, each part (num_layers, B, H); None means zeros."""
        if self.image_to_state is None:
            return None
        B = image.shape[0]
        # (B, n_states*L*H) -> (n_states, L, B, H)
        states = torch.tanh(self.image_to_state(image)).view(B, -1, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3)
        states = states.contiguous()
        return (states[0], states[1]) if self.cell == "lstm" else states[0]

    def _inputs(self, tokens: Tensor, image: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, E or 2E) RNN inputs."""
        x = self.dropout(self.embed(tokens))
        if self.image_to_input is not None:
            img = self.image_to_input(image)[:, None, :].expand(-1, tokens.shape[1], -1)  # (B, L, E)
            x = torch.cat([x, img], dim=-1)
        return x

    def forward(self, encoded: Encoded, input_tokens: Tensor) -> Tensor:
        """Teacher forcing. input_tokens (B, L) = <bos> w1 .. w(L-1) -> logits (B, L, V) for w1 .. wL."""
        image = self.image_vector(encoded)
        # Padded positions only produce logits that the loss ignores; causality means they
        # cannot affect earlier steps, so no packing is needed here.
        out, _ = self.rnn(self._inputs(input_tokens, image), self.initial_state(image))
        return self.head(self.dropout(out))

    def step(self, tokens: Tensor, state: State | None, image: Tensor) -> tuple[Tensor, State]:
        """One step: previous tokens (B,), state, image vector (B, D) -> logits (B, V), new state."""
        out, state = self.rnn(self._inputs(tokens[:, None], image), state)
        return self.head(out[:, 0]), state

    @torch.no_grad()
    def generate(self, encoded: Encoded, bos_id: int, eos_id: int, max_len: int) -> Generated:
        """Greedy decoding: feed back the arg-max token until <eos> or `max_len` tokens."""
        image = self.image_vector(encoded)
        B = image.shape[0]
        state = self.initial_state(image)
        prev = torch.full((B,), bos_id, dtype=torch.long, device=image.device)
        tokens = torch.full((B, max_len), self.pad_id, dtype=torch.long, device=image.device)
        lengths = torch.full((B,), max_len, dtype=torch.long, device=image.device)
        finished = torch.zeros(B, dtype=torch.bool, device=image.device)
        for t in range(max_len):
            logits, state = self.step(prev, state, image)
            prev = logits.argmax(dim=-1)
            newly_done = (prev == eos_id) & ~finished
            lengths[newly_done] = t
            finished |= newly_done
            tokens[:, t] = prev.masked_fill(finished, self.pad_id)
            if bool(finished.all()):
                break
        return Generated(tokens, lengths)
