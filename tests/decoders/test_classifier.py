import pytest
import torch

from decoders.classifier import PooledClassifier, RNNClassifier
from encoders import Encoded

RNN_SETTINGS = [
    dict(cell="lstm", pooling="last"),
    dict(cell="gru", pooling="mean", bidirectional=True),
    dict(cell="rnn", pooling="attention", num_layers=2, dropout=0.1),
    dict(cell="lstm", pooling="last", bidirectional=True, num_layers=2),
]


@pytest.mark.parametrize("settings", RNN_SETTINGS)
def test_padded_steps_do_not_change_the_prediction(settings):
    torch.manual_seed(0)
    dec = RNNClassifier(6, 4, hidden_dim=8, **settings).eval()
    seq = torch.randn(3, 5, 6)
    lengths = torch.tensor([5, 3, 1])
    logits = dec(Encoded(seq, lengths))
    assert logits.shape == (3, 4)
    noisy = seq.clone()
    noisy[1, 3:] = 100.0
    noisy[2, 1:] = -100.0
    torch.testing.assert_close(dec(Encoded(noisy, lengths)), logits)
    # each clip alone, cut to its valid steps, gives the same logits as inside the padded batch
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(dec(Encoded(seq[i : i + 1, :n], None))[0], logits[i], atol=1e-5, rtol=1e-5)


def test_rnn_classifier_depends_on_order():
    torch.manual_seed(0)
    dec = RNNClassifier(6, 4, hidden_dim=8).eval()
    seq = torch.randn(2, 5, 6)
    assert not torch.allclose(dec(Encoded(seq, None)), dec(Encoded(seq.flip(1), None)))


def test_pooled_classifier_is_order_blind_and_ignores_padding():
    torch.manual_seed(0)
    dec = PooledClassifier(6, 4, hidden_dim=8).eval()
    seq = torch.randn(2, 5, 6)
    torch.testing.assert_close(dec(Encoded(seq, None)), dec(Encoded(seq.flip(1), None)))
    lengths = torch.tensor([5, 2])
    noisy = seq.clone()
    noisy[1, 2:] = 99.0
    torch.testing.assert_close(dec(Encoded(seq, lengths)), dec(Encoded(noisy, lengths)))
    assert PooledClassifier(6, 3)(Encoded(seq[:, :1], None)).shape == (2, 3)


def test_input_dropout_only_in_training():
    torch.manual_seed(0)
    head = RNNClassifier(8, 3, hidden_dim=4, input_dropout=0.5)
    enc = Encoded(torch.randn(2, 5, 8), torch.tensor([5, 3]))
    head.eval()
    torch.testing.assert_close(head(enc), head(enc))
    head.train()
    assert not torch.allclose(head(enc), head(enc))


def test_clip_features_skip_the_rnn_and_join_as_their_mean():
    torch.manual_seed(0)
    head = RNNClassifier(10, 3, hidden_dim=4, clip_features=6).eval()
    assert head.rnn.input_size == 4  # the RNN reads the other 4 features of each step
    seq, lengths = torch.randn(2, 5, 10), torch.tensor([5, 3])
    logits = head(Encoded(seq, lengths))
    # the clip features' order over time does not matter (only their mean over the valid steps) ...
    shuffled = seq.clone()
    shuffled[0, :, :6] = seq[0, [4, 2, 0, 1, 3], :6]
    shuffled[1, :3, :6] = seq[1, [2, 0, 1], :6]
    shuffled[1, 3:, :6] = 50.0  # padding is never read
    torch.testing.assert_close(head(Encoded(shuffled, lengths)), logits)
    # ... the rest's order does, and so does the clip features' mean
    flipped = seq.clone()
    flipped[0, :, 6:] = seq[0, :, 6:].flip(0)
    assert not torch.allclose(head(Encoded(flipped, lengths))[0], logits[0])
    shifted = seq.clone()
    shifted[0, :, :6] += 1.0
    assert not torch.allclose(head(Encoded(shifted, lengths))[0], logits[0])
    with pytest.raises(ValueError, match="clip_features"):
        RNNClassifier(10, 3, clip_features=10)
