import math

import pytest
import torch

from decoders.caption import CaptionDecoder, ShowAttendTellDecoder, TokenDecoder, UpDownDecoder
from decoders.search import beam_search, sample, sample_with_log_probs
from encoders.base import Encoded

PAD, BOS, EOS, A, B, C = range(6)


class TableDecoder(TokenDecoder):
    """Next-token log-probabilities depend only on the previous token: a decoder whose best sequence is known."""

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        super().__init__(1, 6, 2, 2, "gru", 1, 0.0, False, PAD)
        logits = torch.full((6, 6), -1e9)
        for prev, nxt in table.items():
            for tok, p in nxt.items():
                logits[prev, tok] = math.log(p)
        self.register_buffer("table", logits)

    def step(self, tokens, state):
        return self.table[tokens], state, None


def trap():
    # Greedy takes A (0.6) and then only finds 0.3-probability words; B (0.4) then <eos> (0.99) is better.
    return TableDecoder({BOS: {A: 0.6, B: 0.4}, A: {C: 0.3, EOS: 0.3, A: 0.4}, B: {EOS: 0.99, C: 0.01}, C: {EOS: 1.0}})


def one_image(n=1):
    return Encoded(torch.zeros(n, 1, 1), None)


def test_beam_beats_greedy_where_greedy_is_wrong():
    dec = trap()
    greedy = sample(dec, one_image(), BOS, EOS, max_len=5)
    beam = beam_search(dec, one_image(), BOS, EOS, max_len=5, beam_size=3)
    assert beam.tokens[0, :2].tolist() == [B, PAD] and beam.lengths.item() == 1
    assert greedy.tokens[0, 0].item() == A
    assert beam.scores.item() == pytest.approx(math.log(0.4 * 0.99), abs=1e-5)
    assert beam.scores.item() > greedy.scores.item()


def test_beam_width_one_is_greedy():
    torch.manual_seed(0)
    dec = CaptionDecoder(4, 9, embed_dim=5, hidden_dim=8).eval()
    enc = Encoded(torch.randn(3, 1, 4), None)
    greedy, beam = sample(dec, enc, 1, 2, 7), beam_search(dec, enc, 1, 2, 7, beam_size=1)
    assert torch.equal(greedy.tokens, beam.tokens)
    torch.testing.assert_close(greedy.scores, beam.scores)


@pytest.mark.parametrize("decoder", ["plain", "sat", "updown"])
def test_batched_beam_equals_one_image_at_a_time(decoder):
    torch.manual_seed(0)
    if decoder == "sat":
        dec = ShowAttendTellDecoder(4, 9, embed_dim=5, hidden_dim=8, attn_dim=3).eval()
    elif decoder == "updown":
        dec = UpDownDecoder(4, 9, embed_dim=5, hidden_dim=8, attn_dim=3).eval()
    else:
        dec = CaptionDecoder(4, 9, embed_dim=5, hidden_dim=8).eval()
    enc = Encoded(torch.randn(4, 6, 4), None)
    batched = beam_search(dec, enc, 1, 2, 8, beam_size=3, length_penalty=0.7)
    for i in range(4):
        alone = beam_search(dec, Encoded(enc.seq[i : i + 1], None), 1, 2, 8, beam_size=3, length_penalty=0.7)
        assert torch.equal(alone.tokens[0], batched.tokens[i])
        torch.testing.assert_close(alone.scores[0], batched.scores[i])
        if decoder != "plain":
            torch.testing.assert_close(alone.attention[0], batched.attention[i])


def test_length_penalty_prefers_longer_hypotheses():
    # <eos> right away (0.5) vs A <eos> (0.45 * 0.9 = 0.405): raw log p picks the empty caption,
    # a length penalty of 3 divides the longer one's log p by ((5 + 2) / 6) ** 3 and picks it.
    dec = TableDecoder({BOS: {EOS: 0.5, A: 0.45, C: 0.05}, A: {EOS: 0.9, A: 0.1}, C: {EOS: 1.0}})
    short = beam_search(dec, one_image(), BOS, EOS, max_len=4, beam_size=3, length_penalty=0.0)
    long = beam_search(dec, one_image(), BOS, EOS, max_len=4, beam_size=3, length_penalty=3.0)
    assert short.lengths.item() == 0
    assert long.tokens[0, :2].tolist() == [A, PAD] and long.lengths.item() == 1


def test_sampling_with_temperature_is_seeded_and_varies():
    dec = TableDecoder({BOS: {A: 0.5, B: 0.5}, A: {EOS: 1.0}, B: {EOS: 1.0}})
    draws = [sample(dec, one_image(64), BOS, EOS, 3, temperature=1.0, generator=torch.Generator().manual_seed(s)).tokens
             for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert {A, B} == set(draws[0][:, 0].tolist())


@pytest.mark.parametrize("decoder", ["plain", "updown"])
def test_sampling_with_log_probs_matches_teacher_forcing_of_the_samples(decoder):
    """SCST's rollout: K samples per image (adjacent rows), and the log-probability it keeps for each token is
    what teacher forcing of that sample gives, with a gradient."""
    torch.manual_seed(0)
    dec = (UpDownDecoder(4, 9, embed_dim=5, hidden_dim=8, attn_dim=3) if decoder == "updown"
           else CaptionDecoder(4, 9, embed_dim=5, hidden_dim=8)).eval()
    enc = Encoded(torch.randn(2, 3, 4), None)
    out = sample_with_log_probs(dec, enc, 1, 2, 6, samples_per_image=3, generator=torch.Generator().manual_seed(0))
    assert out.generated.tokens.shape == (6, 6) and out.log_probs.requires_grad
    L = out.log_probs.shape[1]
    steps = torch.arange(L)[None]
    torch.testing.assert_close(out.mask, steps <= out.generated.lengths[:, None])  # tokens up to and incl. <eos>
    # teacher-force each sample: <bos> + its tokens (the <eos> position holds pad in `tokens`, so put it back)
    targets = out.generated.tokens[:, :L].clone()
    ended = out.generated.lengths < L
    targets[ended, out.generated.lengths[ended]] = 2
    inputs = torch.cat([torch.full((6, 1), 1), targets[:, :-1]], dim=1)
    repeated = Encoded(enc.seq.repeat_interleave(3, dim=0), None)
    logp = dec(repeated, inputs).logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(out.log_probs, logp * out.mask, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.generated.scores, (logp * out.mask).sum(1), atol=1e-5, rtol=1e-4)
    assert torch.all(out.entropy[out.mask] > 0) and torch.all(out.entropy[~out.mask] == 0)
