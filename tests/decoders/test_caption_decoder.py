import pytest
import torch

from decoders.caption import CaptionDecoder, ShowAttendTellDecoder, UpDownDecoder
from decoders.search import sample
from encoders.base import Encoded

V, D = 11, 6


def image(B=2, T=1, lengths=None):
    return Encoded(torch.randn(B, T, D), lengths)


def make(kind, **kw):
    if kind == "sat":
        return ShowAttendTellDecoder(D, V, embed_dim=5, hidden_dim=8, attn_dim=4, **kw).eval()
    if kind == "updown":
        return UpDownDecoder(D, V, embed_dim=5, hidden_dim=8, attn_dim=4, **kw).eval()
    return CaptionDecoder(D, V, embed_dim=5, hidden_dim=8, attention=kind, attn_dim=4, **kw).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("conditioning", ["init", "inject", "both"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("attention", ["none", "post"])
def test_fused_teacher_forcing_equals_step_by_step(cell, conditioning, num_layers, attention):
    torch.manual_seed(0)
    dec = make(attention, cell=cell, num_layers=num_layers, conditioning=conditioning)
    enc, tokens = image(T=4), torch.randint(4, V, (2, 5))
    fused = dec(enc, tokens)  # one nn.LSTM/GRU call over the whole caption
    assert fused.logits.shape == (2, 5, V)
    assert (fused.attention is None) == (attention == "none")
    state = dec.start(enc)
    for t in range(5):
        logits, state, weights = dec.step(tokens[:, t], state)
        torch.testing.assert_close(logits, fused.logits[:, t], atol=1e-5, rtol=1e-4)
    # the step loop that scheduled sampling uses gives the same logits when it never samples
    torch.testing.assert_close(super(type(dec), dec).forward(enc, tokens).logits, fused.logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_show_attend_tell_shapes_and_attention_sums_to_one(cell):
    dec = make("sat", cell=cell, num_layers=2)
    out = dec(image(T=9), torch.randint(4, V, (2, 5)))
    assert out.logits.shape == (2, 5, V) and out.attention.shape == (2, 5, 9)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize("kind", ["post", "sat", "updown"])
def test_attention_ignores_padded_grid_steps(kind):
    torch.manual_seed(0)
    dec = make(kind)
    grid, tokens = torch.randn(1, 4, D), torch.randint(4, V, (1, 3))
    padded = torch.cat([grid, 50 * torch.randn(1, 2, D)], dim=1)
    a = dec(Encoded(grid, None), tokens)
    b = dec(Encoded(padded, torch.tensor([4])), tokens)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)
    assert torch.all(b.attention[..., 4:] == 0)


def test_padding_after_a_caption_does_not_change_its_logits():
    torch.manual_seed(0)
    dec = make("none")
    enc, tokens = image(1), torch.randint(4, V, (1, 4))
    padded = torch.cat([tokens, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(dec(enc, padded).logits[:, :4], dec(enc, tokens).logits)


def test_image_changes_the_caption_logits():
    dec = make("none", conditioning="init")
    tokens = torch.randint(4, V, (1, 4))
    assert not torch.allclose(dec(image(1), tokens).logits, dec(image(1), tokens).logits)


def test_scheduled_sampling_feeds_back_own_predictions():
    torch.manual_seed(0)
    dec = make("none")
    enc, tokens = image(4), torch.randint(4, V, (4, 6))
    teacher = dec(enc, tokens).logits
    always_own = dec(enc, tokens, sample_prob=1.0).logits
    # step 0 reads <bos>-position truth either way; later steps read the model's own words
    torch.testing.assert_close(always_own[:, 0], teacher[:, 0])
    assert not torch.allclose(always_own[:, 1:], teacher[:, 1:])
    own_inputs = torch.cat([tokens[:, :1], teacher.argmax(-1)[:, :-1]], dim=1)
    # feeding the model's own greedy words as "truth" reproduces the first step that differs
    torch.testing.assert_close(dec(enc, own_inputs).logits[:, 1], always_own[:, 1], atol=1e-5, rtol=1e-4)


def test_greedy_generation_stops_at_eos_and_pads_after():
    torch.manual_seed(0)
    dec = make("none")
    eos, calls = 2, {"n": 0}

    def force(module, inputs, output):  # make <eos> win from the third step on
        calls["n"] += 1
        if calls["n"] >= 3:
            output[..., eos] = 1e4
        return output

    dec.head.register_forward_hook(force)
    out = sample(dec, image(3), bos_id=1, eos_id=eos, max_len=10)
    assert out.tokens.shape == (3, 10)
    assert torch.all(out.lengths == 2) and torch.all(out.tokens[:, 2:] == dec.pad_id)
    assert calls["n"] == 3  # stopped as soon as every sequence had ended


def test_generation_respects_max_len():
    out = sample(make("none"), image(2), bos_id=1, eos_id=10**6, max_len=4)  # an <eos> that can never come
    assert out.tokens.shape == (2, 4) and torch.all(out.lengths == 4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("init_state", [False, True])
def test_up_down_shapes_state_layout_and_attention_sums_to_one(cell, init_state):
    torch.manual_seed(0)
    dec = make("updown", cell=cell, init_state=init_state)
    enc, tokens = image(T=9), torch.randint(4, V, (2, 5))
    out = dec(enc, tokens)
    assert out.logits.shape == (2, 5, V) and out.attention.shape == (2, 5, 9)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))
    _, state, weights = dec.step(tokens[:, 0], dec.start(enc))
    parts = state.rnn if cell == "lstm" else (state.rnn,)
    assert all(p.shape == (2, 2, 8) for p in parts)  # (attention RNN, language RNN) x B x H
    assert weights.shape == (2, 9)


def test_up_down_is_causal_and_reads_the_image():
    """Logits at step t depend on the words before t only; the image (mean feature and grid) changes them."""
    torch.manual_seed(0)
    dec = make("updown")
    enc, tokens = image(T=4), torch.randint(4, V, (2, 6))
    changed = tokens.clone()
    changed[:, 3:] = (changed[:, 3:] + 1 - 4) % (V - 4) + 4  # other words from step 3 on
    a, b = dec(enc, tokens).logits, dec(enc, changed).logits
    torch.testing.assert_close(a[:, :3], b[:, :3])  # logits t read inputs 0..t: steps 0..2 are unchanged
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    assert not torch.allclose(dec(image(T=4), tokens).logits[:, 0], a[:, 0])


def test_up_down_attention_rnn_reads_the_language_state():
    """The attention RNN's input is [language state, mean feature, word]: the language RNN's weights reach the
    second step's attention weights (the feedback that makes it top-down), not the first's."""
    torch.manual_seed(0)
    dec = make("updown")
    enc, tokens = image(B=1, T=4), torch.randint(4, V, (1, 3))
    out = dec(enc, tokens)
    first = torch.autograd.grad(out.attention[0, 0, 0], dec.language_rnn.weight_ih, allow_unused=True, retain_graph=True)[0]
    second = torch.autograd.grad(out.attention[0, 1, 0], dec.language_rnn.weight_ih)[0]
    assert first is None or not first.abs().sum()
    assert second.abs().sum() > 0
