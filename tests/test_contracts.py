"""Contracts every encoder and decoder keeps, tested over everything registered (torchvision's test_models manner):
any registered encoder feeds any decoder that reads `Encoded`, `seq.shape[-1] == encoder.out_dim`, and one
backward pass reaches every parameter. A new encoder or decoder without settings below fails the guards."""
from __future__ import annotations

import functools
import inspect

import pytest
import torch
from torch import nn

import decoders
from encoders import Encoded, get_encoder_class, list_encoders
from encoders.image import SmallCNNEncoder

B = 2


def image(size: int = 32):
    return lambda: (torch.randn(B, 3, size, size), None)


# Registered encoder -> (small constructor arguments, inputs (x, lengths) of a batch of two with unequal lengths).
ENCODERS = {
    "small_cnn": (lambda: dict(channels=[8, 16]), image()),
    "resnet": (lambda: dict(depth=18), image()),
    "efficientnet_lite": (lambda: dict(pretrained=False), image()),
    "log_mel": (lambda: dict(channels=[4, 4], out_dim=16, n_mels=16),
                lambda: (torch.randn(B, 4000), torch.tensor([4000, 2500]))),
    "frames": (lambda: dict(image_encoder=SmallCNNEncoder(in_channels=6, channels=[8, 16], spatial=True), motion="diff", grid=2),
               lambda: (torch.randn(B, 4, 3, 16, 16), torch.tensor([4, 2]))),
    "word_embedding": (lambda: dict(vocab_size=10, word_features=torch.randn(10, 2), embed_dim=8),
                       lambda: (torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]]), torch.tensor([4, 2]))),
}
# Encoders with a spatial (grid) output as well: each is also tested that way.
SPATIAL = {"small_cnn", "resnet", "efficientnet_lite"}

# Decoder reading `Encoded` -> (factory from in_dim, scalar loss of its output for the backward pass).
TOKENS = torch.tensor([[1, 4, 5, 2], [1, 3, 2, 0]])
DECODERS = {
    "RNNClassifier": (lambda d: decoders.RNNClassifier(d, 3, hidden_dim=8, bidirectional=True, pooling="attention"),
                      lambda m, enc: m(enc).sum()),
    "PooledClassifier": (lambda d: decoders.PooledClassifier(d, 3, hidden_dim=8), lambda m, enc: m(enc).sum()),
    "CTCDecoder": (lambda d: decoders.CTCDecoder(d, 5, hidden_dim=8, num_layers=2), lambda m, enc: m(enc).sum()),
    "RNNSequenceDecoder": (lambda d: decoders.RNNSequenceDecoder(d, 8), lambda m, enc: m(enc).seq.sum()),
    "BiRNN": (lambda d: decoders.BiRNN(d, 8, num_layers=2), lambda m, enc: m(enc).seq.sum()),
    "CaptionDecoder": (lambda d: decoders.CaptionDecoder(d, 6, embed_dim=8, hidden_dim=8, attention="post", attn_dim=8),
                       lambda m, enc: m(enc, TOKENS).logits.sum()),
    "ShowAttendTellDecoder": (lambda d: decoders.ShowAttendTellDecoder(d, 6, embed_dim=8, hidden_dim=8, attn_dim=8),
                              lambda m, enc: m(enc, TOKENS).logits.sum()),
    "UpDownDecoder": (lambda d: decoders.UpDownDecoder(d, 6, embed_dim=8, hidden_dim=8, attn_dim=8),
                      lambda m, enc: m(enc, TOKENS).logits.sum()),
}
# Exported modules that do not read `Encoded`, and why.
NOT_ENCODED = {
    "AdditiveAttention": "a building block of the attending decoders, tested through them",
    "SequencePooling": "a building block of the classifiers, tested through them",
    "TokenDecoder": "the abstract base of the caption decoders",
    "CharRNN": "reads character ids of its own embedding (the charlm task), not an encoder's output",
}


def test_every_registered_encoder_has_contract_settings():
    assert set(list_encoders()) == set(ENCODERS), "add the new encoder's settings to ENCODERS in tests/test_contracts.py"


def test_every_exported_decoder_has_contract_settings():
    modules = {n for n in decoders.__all__ if inspect.isclass(getattr(decoders, n)) and issubclass(getattr(decoders, n), nn.Module)}
    assert modules == set(DECODERS) | set(NOT_ENCODED), "add the new decoder to DECODERS (or NOT_ENCODED) in tests/test_contracts.py"


@functools.lru_cache(maxsize=None)
def _encoder(name: str, spatial: bool) -> nn.Module:
    torch.manual_seed(0)
    return get_encoder_class(name)(**ENCODERS[name][0](), **({"spatial": True} if spatial else {}))


def build(name: str, spatial: bool) -> tuple[nn.Module, tuple]:
    """The encoder (built once per module, its gradients cleared) and a batch of its inputs."""
    encoder = _encoder(name, spatial)
    encoder.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    return encoder, ENCODERS[name][1]()


CASES = [(e, s) for e in ENCODERS for s in ([False, True] if e in SPATIAL else [False])]


@pytest.mark.parametrize("encoder_name,spatial", CASES)
def test_encoder_output_matches_its_out_dim(encoder_name, spatial):
    encoder, (x, lengths) = build(encoder_name, spatial)
    out = encoder(x, lengths)
    assert isinstance(out, Encoded)
    assert out.seq.shape[0] == B and out.seq.shape[-1] == encoder.out_dim
    if lengths is not None and out.lengths is not None:
        assert int(out.lengths.max()) <= out.seq.shape[1] and out.lengths[0] > out.lengths[1]


# With one encoder step (a pooled image) some weights cannot matter, by arithmetic, not by a bug: recurrent weights
# multiply the zero initial state, and attention over one step is 1 whatever its scores.
ONE_STEP_EXEMPT = ("weight_hh", "attention.", "pool.score")


@pytest.mark.parametrize("decoder_name", list(DECODERS))
@pytest.mark.parametrize("encoder_name,spatial", CASES)
def test_every_parameter_gets_a_gradient(encoder_name, spatial, decoder_name):
    encoder, (x, lengths) = build(encoder_name, spatial)
    make, loss_of = DECODERS[decoder_name]
    decoder = make(encoder.out_dim)
    # eval: in training mode a batch norm after a linear layer cancels that layer's bias exactly (zero gradient)
    encoder.eval(), decoder.eval()
    encoded = encoder(x, lengths)
    loss_of(decoder, encoded).backward()
    exempt = ONE_STEP_EXEMPT if encoded.seq.shape[1] == 1 else ()
    missing = [f"{part}.{n}" for part, module in (("encoder", encoder), ("decoder", decoder))
               for n, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum()) and not any(e in n for e in exempt)]
    assert not missing, f"no gradient reaches {missing[:6]}"
