"""One-to-many: RNNs that write a token sequence conditioned on image features.

Three decoders share one interface (`start`, `step`, `reorder`, `forward`), so greedy, sampled and beam-search
generation (decoders/search.py), scheduled sampling and self-critical training work with any of them:

- `CaptionDecoder`: the image vector conditions the RNN; with `attention="post"` each output also attends over
  the image grid *after* the RNN (Luong style), so teacher-forced training stays one fused `nn.LSTM`/`nn.GRU` call.
- `ShowAttendTellDecoder`: soft attention over the grid *feeds* the RNN at every step (Xu et al. 2015), which
  makes training a loop over steps.
- `UpDownDecoder`: an attention RNN and a language RNN per word, attention between them (Anderson et al. 2018).
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from decoders.attention import AdditiveAttention
from decoders.rnn import CellType, State, make_rnn
from encoders.base import Encoded, lengths_to_mask

ConditioningType = Literal["init", "inject", "both"]


class CaptionState(NamedTuple):
    """Everything a decoder carries between steps. Batch is dim 1 of `rnn` tensors, dim 0 of the rest."""

    rnn: State | None            # each (num_layers, B, H); None = zeros
    image: Tensor                # (B, D) pooled image vector
    grid: Tensor                 # (B, N, D) image steps (N=1 for a pooled encoder)
    grid_keys: Tensor | None     # (B, N, A) attention-projected grid, computed once
    grid_mask: Tensor | None     # (B, N) valid grid steps


class DecoderOutput(NamedTuple):
    logits: Tensor               # (B, L, V)
    attention: Tensor | None     # (B, L, N) attention weights over the image grid, if the decoder attends


class TokenDecoder(nn.Module):
    """Shared parts: embedding, image-conditioned initial state, output head, stepping and reordering."""

    def __init__(
        self, in_dim: int, vocab_size: int, embed_dim: int, hidden_dim: int, cell: CellType, num_layers: int,
        dropout: float, init_state: bool, pad_id: int,
    ) -> None:
        super().__init__()
        self.cell, self.num_layers, self.hidden_dim, self.pad_id = cell, num_layers, hidden_dim, pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        # One projection produces h0 (and c0 for an LSTM) for every layer.
        n_states = 2 if cell == "lstm" else 1
        self.image_to_state = nn.Linear(in_dim, n_states * num_layers * hidden_dim) if init_state else None
        self.dropout = nn.Dropout(dropout)

    # -- to implement ----------------------------------------------------------------------------
    def step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor | None]:
        """Previous tokens (B,) -> logits (B, V), next state, attention weights (B, N) or None."""
        raise NotImplementedError

    def project_grid(self, grid: Tensor) -> Tensor | None:
        return None

    # -- shared ----------------------------------------------------------------------------------
    def start(self, encoded: Encoded) -> CaptionState:
        """Encoder output -> the state before the first token."""
        grid, lengths = encoded
        mask = lengths_to_mask(lengths, grid.shape[1])
        if mask is None:
            image = grid.mean(dim=1)
        else:
            image = (grid * mask.unsqueeze(-1)).sum(1) / lengths.clamp(min=1)[:, None]
        return CaptionState(self.initial_state(image), image, grid, self.project_grid(grid), mask)

    def initial_state(self, image: Tensor) -> State | None:
        """(B, D) image vector -> RNN state, each part (num_layers, B, H); None means zeros."""
        if self.image_to_state is None:
            return None
        B = image.shape[0]
        # (B, n_states*L*H) -> (n_states, L, B, H)
        states = torch.tanh(self.image_to_state(image)).view(B, -1, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3)
        states = states.contiguous()
        return (states[0], states[1]) if self.cell == "lstm" else states[0]

    @staticmethod
    def reorder(state: CaptionState, index: Tensor) -> CaptionState:
        """Select/repeat batch entries (beam search): index (B',) into the current batch."""
        rnn = state.rnn
        if isinstance(rnn, tuple):
            rnn = tuple(part.index_select(1, index) for part in rnn)
        elif rnn is not None:
            rnn = rnn.index_select(1, index)
        rest = [None if t is None else t.index_select(0, index) for t in state[1:]]
        return CaptionState(rnn, *rest)

    def forward(self, encoded: Encoded, input_tokens: Tensor, sample_prob: float = 0.0) -> DecoderOutput:
        """input_tokens (B, L) = <bos> w1 .. w(L-1) -> logits for w1 .. wL, one step at a time.

        With `sample_prob` > 0 (scheduled sampling), each step's input is, per sample and with that probability,
        the model's own previous prediction instead of the true previous word.
        """
        state = self.start(encoded)
        B, L = input_tokens.shape
        logits, attention = [], []
        prev = input_tokens[:, 0]
        for t in range(L):
            step_logits, state, weights = self.step(prev, state)
            logits.append(step_logits)
            attention.append(weights)
            if t + 1 < L:
                prev = input_tokens[:, t + 1]
                if sample_prob > 0:
                    own = step_logits.detach().argmax(dim=-1)
                    use_own = torch.rand(B, device=prev.device) < sample_prob
                    prev = torch.where(use_own & (prev != self.pad_id), own, prev)
        stacked = None if attention[0] is None else torch.stack(attention, dim=1)
        return DecoderOutput(torch.stack(logits, dim=1), stacked)


class CaptionDecoder(TokenDecoder):
    """LSTM/GRU/RNN language model conditioned on an image.

    Args:
        in_dim: image feature size (from the encoder).
        vocab_size: output tokens (from the vocabulary).
        embed_dim: word embedding size.
        hidden_dim: RNN state size.
        cell: lstm, gru or rnn.
        num_layers: stacked RNN layers.
        dropout: on embeddings, between layers and before the output layer.
        conditioning: init - the image vector sets the initial state; inject - it is concatenated to every input
            embedding; both.
        attention: none, or post - attend over the image grid with each RNN output (needs a spatial encoder).
        attn_dim: size of the attention's hidden layer.
        pad_id: id of <pad> (embedding row kept at zero).
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
        attention: Literal["none", "post"] = "none",
        attn_dim: int = 128,
        pad_id: int = 0,
    ) -> None:
        if conditioning not in ("init", "inject", "both"):
            raise ValueError(f"unknown conditioning {conditioning!r}; choose init, inject or both")
        if attention not in ("none", "post"):
            raise ValueError(f"unknown attention {attention!r}; choose none or post")
        super().__init__(in_dim, vocab_size, embed_dim, hidden_dim, cell, num_layers, dropout,
                         conditioning in ("init", "both"), pad_id)
        self.conditioning = conditioning
        self.image_to_input = nn.Linear(in_dim, embed_dim) if conditioning in ("inject", "both") else None
        self.rnn = make_rnn(cell, embed_dim * (2 if self.image_to_input is not None else 1), hidden_dim, num_layers, dropout)
        self.attention = AdditiveAttention(hidden_dim, in_dim, attn_dim) if attention == "post" else None
        # With post-attention the output layer reads tanh(W [h_t; context_t]), as in Luong et al. 2015.
        self.combine = nn.Linear(hidden_dim + in_dim, hidden_dim) if self.attention is not None else None
        self.head = nn.Linear(hidden_dim, vocab_size)

    def project_grid(self, grid: Tensor) -> Tensor | None:
        return None if self.attention is None else self.attention.project_keys(grid)

    def _inputs(self, tokens: Tensor, image: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, E or 2E) RNN inputs."""
        x = self.dropout(self.embed(tokens))
        if self.image_to_input is not None:
            img = self.image_to_input(image)[:, None, :].expand(-1, tokens.shape[1], -1)  # (B, L, E)
            x = torch.cat([x, img], dim=-1)
        return x

    def _outputs(self, hidden: Tensor, state: CaptionState) -> tuple[Tensor, Tensor | None]:
        """RNN outputs (B, L, H) -> logits (B, L, V), attention (B, L, N) or None."""
        if self.attention is None:
            return self.head(self.dropout(hidden)), None
        context, weights = self.attention(hidden, state.grid, state.grid_keys, state.grid_mask)
        mixed = torch.tanh(self.combine(torch.cat([hidden, context], dim=-1)))
        return self.head(self.dropout(mixed)), weights

    def forward(self, encoded: Encoded, input_tokens: Tensor, sample_prob: float = 0.0) -> DecoderOutput:
        """Teacher forcing in one fused RNN call; scheduled sampling (`sample_prob` > 0) steps instead."""
        if sample_prob > 0:
            return super().forward(encoded, input_tokens, sample_prob)
        state = self.start(encoded)
        # Padded positions only produce logits that the loss ignores; causality means they
        # cannot affect earlier steps, so no packing is needed here.
        hidden, _ = self.rnn(self._inputs(input_tokens, state.image), state.rnn)
        return DecoderOutput(*self._outputs(hidden, state))

    def step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor | None]:
        hidden, rnn_state = self.rnn(self._inputs(tokens[:, None], state.image), state.rnn)
        state = state._replace(rnn=rnn_state)
        logits, weights = self._outputs(hidden, state)
        return logits[:, 0], state, None if weights is None else weights[:, 0]


class ShowAttendTellDecoder(TokenDecoder):
    """Show, Attend and Tell: at each step, attention over the image grid (queried by the previous top-layer
    state) is gated and fed to the RNN beside the previous word. Train with the doubly stochastic
    regularisation (`CaptioningTask(attention_regularization=1.0)`), which pushes every region's attention,
    summed over the caption, towards 1.

    Args:
        in_dim: image feature size (from the encoder).
        vocab_size: output tokens (from the vocabulary).
        embed_dim: word embedding size.
        hidden_dim: RNN state size.
        cell: lstm, gru or rnn.
        num_layers: stacked RNN layers.
        dropout: on embeddings, between layers and before the output layer.
        attn_dim: size of the attention's hidden layer.
        pad_id: id of <pad>.
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
        attn_dim: int = 128,
        pad_id: int = 0,
    ) -> None:
        super().__init__(in_dim, vocab_size, embed_dim, hidden_dim, cell, num_layers, dropout, True, pad_id)
        self.attention = AdditiveAttention(hidden_dim, in_dim, attn_dim)
        self.gate = nn.Linear(hidden_dim, in_dim)  # the paper's beta: how much of the context to let in
        self.rnn = make_rnn(cell, embed_dim + in_dim, hidden_dim, num_layers, dropout)
        self.head = nn.Linear(hidden_dim + in_dim, vocab_size)

    def project_grid(self, grid: Tensor) -> Tensor:
        return self.attention.project_keys(grid)

    def step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor]:
        h = state.rnn[0] if isinstance(state.rnn, tuple) else state.rnn
        query = h[-1][:, None, :]  # top layer's previous state, (B, 1, H)
        context, weights = self.attention(query, state.grid, state.grid_keys, state.grid_mask)  # (B, 1, D), (B, 1, N)
        context = torch.sigmoid(self.gate(query)) * context
        x = torch.cat([self.dropout(self.embed(tokens[:, None])), context], dim=-1)  # (B, 1, E + D)
        hidden, rnn_state = self.rnn(x, state.rnn)
        logits = self.head(self.dropout(torch.cat([hidden, context], dim=-1)))
        return logits[:, 0], state._replace(rnn=rnn_state), weights[:, 0]


_CELLS: dict[str, type[nn.RNNCellBase]] = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


class UpDownDecoder(TokenDecoder):
    """The top-down part of Bottom-Up and Top-Down attention (Anderson et al. 2018): two RNNs per word.

    - attention RNN: reads [language RNN's previous state, mean image feature, previous word's embedding];
    - soft attention over the image grid, queried by the attention RNN's new state;
    - language RNN: reads [attended feature, attention RNN's state]; its state gives the word logits.

    The two states travel as layer 0 (attention) and layer 1 (language) of `CaptionState.rnn`, so beam search's
    `reorder` and the shared step loop (teacher forcing, scheduled sampling, sampling) need nothing new.

    Args:
        in_dim: image feature size (from the encoder).
        vocab_size: output tokens (from the vocabulary).
        embed_dim: word embedding size.
        hidden_dim: state size of both RNNs.
        cell: lstm (the paper's), gru or rnn.
        dropout: on embeddings and before the output layer.
        attn_dim: size of the attention's hidden layer.
        init_state: both RNNs start from a projection of the mean image feature (False: zeros, as in the paper).
        pad_id: id of <pad>.
    """

    def __init__(
        self,
        in_dim: int,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        cell: CellType = "lstm",
        dropout: float = 0.0,
        attn_dim: int = 128,
        init_state: bool = False,
        pad_id: int = 0,
    ) -> None:
        if cell not in _CELLS:
            raise ValueError(f"unknown RNN cell {cell!r}; choose one of {sorted(_CELLS)}")
        super().__init__(in_dim, vocab_size, embed_dim, hidden_dim, cell, 2, dropout, init_state, pad_id)
        self.attention_rnn = _CELLS[cell](hidden_dim + in_dim + embed_dim, hidden_dim)
        self.attention = AdditiveAttention(hidden_dim, in_dim, attn_dim)
        self.language_rnn = _CELLS[cell](in_dim + hidden_dim, hidden_dim)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def project_grid(self, grid: Tensor) -> Tensor:
        return self.attention.project_keys(grid)

    def step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor]:
        B = tokens.shape[0]
        if state.rnn is None:  # zeros: (2, B, H) per part, layer 0 = attention RNN, layer 1 = language RNN
            zeros = state.image.new_zeros(2, B, self.hidden_dim)
            rnn = (zeros, zeros) if self.cell == "lstm" else zeros
        else:
            rnn = state.rnn
        h, c = rnn if self.cell == "lstm" else (rnn, None)
        x = torch.cat([h[1], state.image, self.dropout(self.embed(tokens))], dim=-1)  # (B, H + D + E)
        if c is None:
            h_att = self.attention_rnn(x, h[0])
        else:
            h_att, c_att = self.attention_rnn(x, (h[0], c[0]))
        context, weights = self.attention(h_att[:, None], state.grid, state.grid_keys, state.grid_mask)  # (B, 1, D), (B, 1, N)
        y = torch.cat([context[:, 0], h_att], dim=-1)  # (B, D + H)
        if c is None:
            h_lang = self.language_rnn(y, h[1])
            new_rnn = torch.stack([h_att, h_lang])
        else:
            h_lang, c_lang = self.language_rnn(y, (h[1], c[1]))
            new_rnn = (torch.stack([h_att, h_lang]), torch.stack([c_att, c_lang]))
        logits = self.head(self.dropout(h_lang))
        return logits, state._replace(rnn=new_rnn), weights[:, 0]
