"""Generation for any `TokenDecoder`: greedy, temperature sampling and batched beam search."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from decoders.caption import CaptionState, TokenDecoder
from encoders.base import Encoded


class Generated(NamedTuple):
    tokens: Tensor               # (B, L) token ids, pad after each sequence's <eos>
    lengths: Tensor              # (B,) tokens before <eos> (the <eos> itself not counted)
    attention: Tensor | None     # (B, L, N) attention over the image grid per generated token, if any
    scores: Tensor               # (B,) total log-probability of each sequence (incl. <eos>)


class Rollout(NamedTuple):
    """Sampled captions with what a policy gradient needs; rows are images x samples, each image's samples adjacent."""

    generated: Generated
    log_probs: Tensor            # (B*K, L') log-probability of each sampled token, with autograd; 0 after <eos>
    mask: Tensor                 # (B*K, L') steps up to and including <eos>
    entropy: Tensor              # (B*K, L') entropy of each step's distribution (0 after <eos>), no gradient


def _rollout(
    decoder: TokenDecoder, state: CaptionState, bos_id: int, eos_id: int, max_len: int, temperature: float,
    generator: torch.Generator | None, with_entropy: bool, stop_early: bool = True,
) -> Rollout:
    """Generate from `state` one token at a time: arg-max (temperature 0) or drawn from softmax(logits / temperature);
    log-probabilities are the model's own (temperature 1), with autograd when it is on. stop_early=False runs all
    `max_len` steps (the same tokens: a finished row only adds padding), the fixed loop an exported model needs."""
    B, device = state.image.shape[0], state.image.device
    prev = torch.full((B,), bos_id, dtype=torch.long, device=device)
    tokens = torch.full((B, max_len), decoder.pad_id, dtype=torch.long, device=device)
    lengths = torch.full((B,), max_len, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    attention, log_probs, mask, entropy = [], [], [], []
    for t in range(max_len):
        logits, state, weights = decoder.step(prev, state)
        logp = logits.log_softmax(dim=-1)  # (B, V)
        if temperature > 0:
            with torch.no_grad():
                prev = torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=generator).squeeze(1)
        else:
            prev = logp.detach().argmax(dim=-1)
        alive = ~finished  # this step's token (an <eos> included) belongs to the caption
        log_probs.append(logp.gather(1, prev[:, None]).squeeze(1) * alive)
        mask.append(alive)
        if with_entropy:
            with torch.no_grad():
                entropy.append(-(logp.exp() * logp).sum(-1) * alive)
        attention.append(weights)
        newly_done = (prev == eos_id) & ~finished
        lengths[newly_done] = t
        finished = finished | newly_done
        tokens[:, t] = prev.masked_fill(finished, decoder.pad_id)
        if stop_early and bool(finished.all()):
            break
    log_probs_t = torch.stack(log_probs, dim=1)
    generated = Generated(tokens, lengths, _stack(attention, max_len), log_probs_t.detach().sum(1))
    return Rollout(generated, log_probs_t, torch.stack(mask, dim=1),
                   torch.stack(entropy, dim=1) if with_entropy else torch.zeros_like(log_probs_t.detach()))


@torch.no_grad()
def sample(
    decoder: TokenDecoder, encoded: Encoded, bos_id: int, eos_id: int, max_len: int,
    temperature: float = 0.0, generator: torch.Generator | None = None, stop_early: bool = True,
) -> Generated:
    """temperature 0: greedy (arg-max each step); > 0: draw from softmax(logits / temperature)."""
    return _rollout(decoder, decoder.start(encoded), bos_id, eos_id, max_len, temperature, generator, False,
                    stop_early).generated


def sample_with_log_probs(
    decoder: TokenDecoder, encoded: Encoded, bos_id: int, eos_id: int, max_len: int, samples_per_image: int = 1,
    generator: torch.Generator | None = None,
) -> Rollout:
    """`samples_per_image` captions drawn from the model (temperature 1) for every image, with the log-probability
    of each drawn token kept for backpropagation (self-critical training). The image is encoded and its grid
    projected once; its samples are rows i*K .. i*K+K-1."""
    state = decoder.start(encoded)
    if samples_per_image > 1:
        B = state.image.shape[0]
        state = decoder.reorder(state, torch.arange(B, device=state.image.device).repeat_interleave(samples_per_image))
    return _rollout(decoder, state, bos_id, eos_id, max_len, 1.0, generator, True)


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
        finished = finished | newly_done
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
