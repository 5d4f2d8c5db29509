import pytest
import torch

from encoders import list_encoders
from encoders.audio import LogMelEncoder

import encoders.audio  # noqa: F401 - registers "log_mel"


def tiny(**kwargs) -> LogMelEncoder:
    args = dict(n_mels=20, channels=[4, 4], time_strides=[2, 2], out_dim=16, dropout=0.0)
    return LogMelEncoder(**{**args, **kwargs})


def test_registered():
    assert "log_mel" in list_encoders()


@pytest.mark.parametrize("strides", [[2, 2], [3, 1], [2]])
def test_shapes_and_lengths_after_subsampling(strides):
    enc = tiny(time_strides=strides, channels=[4] * len(strides)).eval()
    lengths = torch.tensor([16000, 12345, 401, 100])  # 1 s, odd, just over one window, shorter than one window
    audio = torch.randn(4, 16000)
    out = enc(audio, lengths)
    # frames: (S - 400) // 160 + 1 (at least 1); each kernel-3 conv: (L - 1) // stride + 1
    expected = []
    for s in lengths.tolist():
        steps = max(s - 400, 0) // 160 + 1
        for stride in strides:
            steps = (steps - 1) // stride + 1
        expected.append(steps)
    assert out.lengths.tolist() == expected
    assert out.seq.shape == (4, expected[0], 16)
    assert enc.seconds_per_step == pytest.approx(0.01 * (strides[0] * (strides[1] if len(strides) > 1 else 1)))


def test_padded_utterance_encodes_like_the_unpadded_one():
    torch.manual_seed(0)
    enc = tiny().eval()
    short, long = torch.randn(9000), torch.randn(16000)
    alone = enc(short[None], torch.tensor([9000]))
    batch = torch.zeros(2, 16000)
    batch[0, :9000], batch[1] = short, long
    batch[0, 9000:] = 5.0  # garbage in the padding must not leak into valid steps
    together = enc(batch, torch.tensor([9000, 16000]))
    n = int(alone.lengths[0])
    assert together.lengths[0] == n
    torch.testing.assert_close(together.seq[0, :n], alone.seq[0], atol=1e-5, rtol=1e-4)


def test_specaugment_only_in_training():
    torch.manual_seed(0)
    enc = tiny(freq_masks=2, time_masks=2, time_mask_width=10)
    audio, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    enc.eval()
    assert torch.equal(enc(audio, lengths).seq, enc(audio, lengths).seq)
    enc.train()
    assert not torch.equal(enc(audio, lengths).seq, enc(audio, lengths).seq)


def test_features_are_normalised_per_utterance():
    enc = tiny().eval()
    audio = torch.randn(1, 16000) * 100.0  # loud
    feats = enc.features(audio, torch.tensor([16000]))
    assert feats.mean(1).abs().max() < 1e-3
    assert (feats.std(1, unbiased=False) - 1).abs().max() < 1e-2
