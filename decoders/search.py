"""Generation for any `TokenDecoder`: greedy, temperature sampling and batched beam search."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from decoders.caption import TokenDecoder
from encoders.base import Encoded


class Generated(NamedTuple):
    tokens: Tensor               # (B, L) token ids, pad after each sequence's <eos>
    lengths: Tensor              # (B,) tokens before <eos> (the <eos> itself not counted)
    attention: Tensor | None     # (B, L, N) attention over the image grid per generated token, if any
    scores: Tensor               # (B,) total log-probability of each sequence (incl. <eos>)


@torch.no_grad()
def sample(
    decoder: TokenDecoder, encoded: Encoded, bos_id: int, eos_id: int, max_len: int,
    temperature: float = 0.0, generator: torch.Generator | None = None,
) -> Generated:
    """temperature 0: greedy (arg-max each step); > 0: draw from softmax(logits / temperature)."""
    state = decoder.start(encoded)
    B, device = state.image.shape[0], state.image.device
    prev = torch.full((B,), bos_id, dtype=torch.long, device=device)
    tokens = torch.full((B, max_len), decoder.pad_id, dtype=torch.long, device=device)
    lengths = torch.full((B,), max_len, dtype=torch.long, device=device)
    scores = torch.zeros(B, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    attention = []
    for t in range(max_len):
        logits, state, weights = decoder.step(prev, state)
        logp = logits.log_softmax(dim=-1)
        if temperature > 0:
            prev = torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=generator).squeeze(1)
        else:
            prev = logp.argmax(dim=-1)
        scores += torch.where(finished, 0.0, logp.gather(1, prev[:, None]).squeeze(1))
        attention.append(weights)
        newly_done = (prev == eos_id) & ~finished
        lengths[newly_done] = t
        finished |= newly_done
        tokens[:, t] = prev.masked_fill(finished, decoder.pad_id)
        if bool(finished.all()):
            break
    return Generated(tokens, lengths, _stack(attention, max_len), scores)


@torch.no_grad()
def beam_search(
    decoder: TokenDecoder, encoded: Encoded, bos_id: int, eos_id: int, max_len: int,
    beam_size: int = 3, length_penalty: float = 0.0,
) -> Generated:
    """Beam search over all images and beams at once: the batch runs as B*K rows, no loop over samples.

    A finished hypothesis only extends with <pad> at no cost, so it keeps its score while the others grow.
    The winner per image maximises log p / ((5 + length) / 6) ** length_penalty (Wu et al. 2016; 0 = raw log p).
    """
    state = decoder.start(encoded)
    B, K, device = state.image.shape[0], beam_size, state.image.device
    state = decoder.reorder(state, torch.arange(B, device=device).repeat_interleave(K))
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive so the first top-k differs
    prev = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    tokens = torch.full((B * K, max_len), decoder.pad_id, dtype=torch.long, device=device)
    lengths = torch.full((B * K,), max_len, dtype=torch.long, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    attention: Tensor | None = None
    for t in range(max_len):
        logits, state, weights = decoder.step(prev, state)
        logp = logits.log_softmax(dim=-1)  # (B*K, V)
        V = logp.shape[-1]
        logp[finished] = float("-inf")
        logp[finished, decoder.pad_id] = 0.0
        candidates = (scores.view(-1, 1) + logp).view(B, K * V)
        scores, best = candidates.topk(K, dim=1)  # (B, K)
        source = (torch.arange(B, device=device)[:, None] * K + best // V).view(-1)  # beam each winner extends
        next_tokens = (best % V).view(-1)
        state = decoder.reorder(state, source)
        tokens, lengths, finished = tokens[source], lengths[source], finished[source]
        if weights is not None:
            step_weights = weights[source][:, None]
            attention = step_weights if attention is None else torch.cat([attention[source], step_weights], dim=1)
        newly_done = (next_tokens == eos_id) & ~finished
        lengths[newly_done] = t
        finished |= newly_done
        tokens[:, t] = next_tokens.masked_fill(finished, decoder.pad_id)
        prev = next_tokens.masked_fill(finished, decoder.pad_id)
        if bool(finished.all()):
            break
    # +1 counts the <eos> (or the cut) so that length 0 is never divided by
    norm = ((5.0 + (lengths + 1).float()) / 6.0) ** length_penalty
    final = (scores.view(-1) / norm).view(B, K)
    pick = torch.arange(B, device=device) * K + final.argmax(dim=1)
    if attention is not None:
        attention = _pad_steps(attention[pick], max_len)
    return Generated(tokens[pick], lengths[pick], attention, scores.view(-1)[pick])


def _stack(weights: list[Tensor | None], max_len: int) -> Tensor | None:
    if not weights or weights[0] is None:
        return None
    return _pad_steps(torch.stack(weights, dim=1), max_len)


def _pad_steps(attention: Tensor, max_len: int) -> Tensor:
    """(B, L', N) -> (B, max_len, N), zeros for steps never taken."""
    missing = max_len - attention.shape[1]
    return torch.nn.functional.pad(attention, (0, 0, 0, missing)) if missing > 0 else attention
