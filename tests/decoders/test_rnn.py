import pytest
import torch

from decoders.rnn import RNNSequenceDecoder, SequencePooling, make_rnn, run_rnn
from encoders.base import Encoded

CELLS = ["lstm", "gru", "rnn"]


@pytest.mark.parametrize("cell", CELLS)
def test_make_rnn_builds_the_cell_and_stack(cell):
    rnn = make_rnn(cell, 5, 7, num_layers=2, dropout=0.1, bidirectional=True)
    assert type(rnn).__name__ == cell.upper() and rnn.num_layers == 2 and rnn.bidirectional
    out, _ = rnn(torch.randn(3, 4, 5))
    assert out.shape == (3, 4, 14)


def test_make_rnn_rejects_unknown_cell():
    with pytest.raises(ValueError, match="lstm"):
        make_rnn("transformer", 5, 7)


def test_parameters_are_shared_over_time():
    # The same weights serve every step: the parameter count does not grow with sequence length.
    rnn = make_rnn("lstm", 4, 8)
    n = sum(p.numel() for p in rnn.parameters())
    assert n == 4 * (8 * 4 + 8 * 8 + 2 * 8)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_valid_steps(cell, bidirectional):
    torch.manual_seed(0)
    rnn = make_rnn(cell, 3, 6, num_layers=2, bidirectional=bidirectional).eval()
    short, long = torch.randn(1, 4, 3), torch.randn(1, 7, 3)
    batch = torch.zeros(2, 7, 3)
    batch[0, :4], batch[1] = short[0], long[0]
    batch[0, 4:] = 99.0  # garbage in the padding must not leak into the valid steps
    out, _ = run_rnn(rnn, batch, torch.tensor([4, 7]))
    alone, _ = rnn(short)
    torch.testing.assert_close(out[0, :4], alone[0], atol=1e-5, rtol=1e-4)
    assert torch.all(out[0, 4:] == 0)
    torch.testing.assert_close(out[1], rnn(long)[0][0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["last", "mean", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooling_ignores_padding(mode, bidirectional):
    torch.manual_seed(0)
    dec = RNNSequenceDecoder(3, hidden_dim=4, num_layers=1, bidirectional=bidirectional).eval()
    pool = SequencePooling(dec.out_dim, mode, bidirectional=bidirectional).eval()
    x = torch.randn(1, 5, 3)
    padded = torch.cat([x, torch.randn(1, 3, 3)], dim=1)
    alone = pool(dec(Encoded(x, None)))
    in_padding = pool(dec(Encoded(padded, torch.tensor([5]))))
    torch.testing.assert_close(alone, in_padding, atol=1e-5, rtol=1e-4)


def test_last_pooling_reads_each_direction_where_it_ends():
    seq = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4)
    pooled = SequencePooling(4, "last", bidirectional=True)(Encoded(seq, torch.tensor([2, 3])))
    # forward half from the last valid step, backward half from step 0
    torch.testing.assert_close(pooled[0], torch.cat([seq[0, 1, :2], seq[0, 0, 2:]]))
    torch.testing.assert_close(pooled[1], torch.cat([seq[1, 2, :2], seq[1, 0, 2:]]))
