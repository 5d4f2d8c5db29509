import pytest
import torch

from decoders.classifier import RNNClassifier
from encoders import Encoded, WordEmbeddingEncoder, get_encoder_class, list_encoders

# Small settings for each registered text encoder; a new one without an entry fails the first test.
TEXT_ENCODER_ARGS = {"word_embedding": {"vocab_size": 20, "embed_dim": 8}}


def test_every_registered_text_encoder_has_test_settings():
    names = {n for n in list_encoders() if get_encoder_class(n) in {WordEmbeddingEncoder}}
    assert names == set(TEXT_ENCODER_ARGS)


@pytest.mark.parametrize("name", list(TEXT_ENCODER_ARGS))
def test_shapes_lengths_and_every_parameter_gets_a_gradient(name):
    enc = get_encoder_class(name)(**TEXT_ENCODER_ARGS[name])
    tokens, lengths = torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])
    out = enc(tokens, lengths)
    assert isinstance(out, Encoded) and out.seq.shape == (2, 3, enc.out_dim) and out.lengths is lengths
    head = RNNClassifier(enc.out_dim, 2, hidden_dim=4)
    head(out).sum().backward()
    for n, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {n}"


def test_word_features_are_appended_and_fixed():
    features = torch.arange(20.0).view(10, 2)
    enc = WordEmbeddingEncoder(10, features, embed_dim=4)
    assert enc.out_dim == 6 and "word_features" in enc.state_dict()
    out = enc(torch.tensor([[3, 7]])).seq
    assert out[0, :, 4:].tolist() == [[6.0, 7.0], [14.0, 15.0]]
    assert all(p.shape != features.shape for p in enc.parameters())  # a buffer, not trained
    with pytest.raises(ValueError, match="3 rows for 10 words"):
        WordEmbeddingEncoder(10, torch.zeros(3, 2))


def test_pad_is_zero_and_word_dropout_only_in_training_and_never_on_padding():
    torch.manual_seed(0)
    enc = WordEmbeddingEncoder(10, embed_dim=4, word_dropout=0.5, pad_id=0, unk_id=3)
    tokens = torch.tensor([[5] * 200 + [0] * 100])
    assert enc.embedding.weight[0].abs().sum() == 0
    seen = []
    enc.embedding.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    enc.train()(tokens)
    dropped = seen[-1] == 3
    assert 60 < dropped[0, :200].sum() < 140 and (seen[-1][0, 200:] == 0).all()
    enc.eval()(tokens)
    assert torch.equal(seen[-1], tokens)
