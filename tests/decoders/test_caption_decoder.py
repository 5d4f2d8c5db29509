import pytest
import torch

from decoders.caption import CaptionDecoder
from encoders.base import Encoded

V, D = 11, 6


def image(B=2, T=1):
    return Encoded(torch.randn(B, T, D), None)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("conditioning", ["init", "inject", "both"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_teacher_forced_call_equals_step_by_step(cell, conditioning, num_layers):
    torch.manual_seed(0)
    dec = CaptionDecoder(D, V, embed_dim=5, hidden_dim=8, cell=cell, num_layers=num_layers, conditioning=conditioning).eval()
    enc, tokens = image(), torch.randint(4, V, (2, 5))
    fused = dec(enc, tokens)  # (B, L, V) from one nn.LSTM/GRU call
    assert fused.shape == (2, 5, V)
    img = dec.image_vector(enc)
    state = dec.initial_state(img)
    for t in range(5):
        logits, state = dec.step(tokens[:, t], state, img)
        torch.testing.assert_close(logits, fused[:, t], atol=1e-5, rtol=1e-4)


def test_padding_after_a_caption_does_not_change_its_logits():
    torch.manual_seed(0)
    dec = CaptionDecoder(D, V, embed_dim=5, hidden_dim=8).eval()
    enc, tokens = image(1), torch.randint(4, V, (1, 4))
    padded = torch.cat([tokens, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(dec(enc, padded)[:, :4], dec(enc, tokens))


def test_image_changes_the_caption_logits():
    dec = CaptionDecoder(D, V, embed_dim=5, hidden_dim=8, conditioning="init").eval()
    tokens = torch.randint(4, V, (1, 4))
    a, b = dec(Encoded(torch.randn(1, 1, D), None), tokens), dec(Encoded(torch.randn(1, 1, D), None), tokens)
    assert not torch.allclose(a, b)


def test_image_vector_averages_valid_spatial_steps_only():
    dec = CaptionDecoder(D, V)
    seq = torch.randn(1, 4, D)
    torch.testing.assert_close(dec.image_vector(Encoded(seq, torch.tensor([2]))), seq[:, :2].mean(1))


def test_generate_stops_at_eos_and_pads_after():
    torch.manual_seed(0)
    dec = CaptionDecoder(D, V, embed_dim=5, hidden_dim=8).eval()
    eos = 2
    with torch.no_grad():  # make <eos> win from the third step on: bias the head after two steps via a hook
        calls = {"n": 0}

        def force(module, inputs, output):
            calls["n"] += 1
            if calls["n"] >= 3:
                output[:, eos] = 1e4
            return output

        dec.head.register_forward_hook(force)
        out = dec.generate(image(3), bos_id=1, eos_id=eos, max_len=10)
    assert out.tokens.shape == (3, 10)
    assert torch.all(out.lengths == 2)
    assert torch.all(out.tokens[:, 2:] == dec.pad_id)
    assert calls["n"] == 3  # stopped as soon as every sequence had ended


def test_generate_respects_max_len():
    dec = CaptionDecoder(D, V).eval()
    out = dec.generate(image(2), bos_id=1, eos_id=10**6, max_len=4)  # an <eos> that can never be produced
    assert out.tokens.shape == (2, 4) and torch.all(out.lengths == 4)
