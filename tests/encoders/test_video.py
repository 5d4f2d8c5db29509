import pytest
import torch

from encoders import Encoded, ResNetEncoder, SmallCNNEncoder, get_encoder_class
from encoders.video import FrameEncoder


def small(spatial=False):
    return SmallCNNEncoder(channels=[8, 16], spatial=spatial)


def test_registered_under_frames():
    assert get_encoder_class("frames") is FrameEncoder


@pytest.mark.parametrize("grid", [1, 2])
def test_variable_length_clips_give_features_per_valid_frame(grid):
    enc = FrameEncoder(small(spatial=grid > 1), grid=grid).eval()
    x = torch.randn(3, 5, 3, 16, 16)
    lengths = torch.tensor([5, 2, 3])
    out = enc(x, lengths)
    assert isinstance(out, Encoded) and torch.equal(out.lengths, lengths)
    assert out.seq.shape == (3, 5, enc.out_dim) and enc.out_dim == 16 * grid * grid
    assert torch.all(out.seq[1, 2:] == 0) and torch.all(out.seq[2, 3:] == 0)
    # each frame's features are the image encoder's on that frame alone
    single = enc.encode_frames(x[1, :2])
    torch.testing.assert_close(out.seq[1, :2], single)
    assert enc(x).lengths is None and enc(x).seq.shape == (3, 5, enc.out_dim)


def test_padding_content_does_not_change_valid_features():
    enc = FrameEncoder(small()).eval()
    x = torch.randn(2, 4, 3, 16, 16)
    lengths = torch.tensor([4, 2])
    noisy = x.clone()
    noisy[1, 2:] = torch.randn(2, 3, 16, 16) * 100
    torch.testing.assert_close(enc(x, lengths).seq, enc(noisy, lengths).seq)


def test_training_mode_batchnorm_sees_only_valid_frames():
    torch.manual_seed(0)
    a, b = FrameEncoder(small()), FrameEncoder(small())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 3, 16, 16)
    lengths = torch.tensor([4, 1])
    noisy = x.clone()
    noisy[1, 1:] = 50.0
    a(x, lengths), b(noisy, lengths)  # updates BatchNorm running statistics
    for (name, ra), rb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(ra, rb, msg=name)


def test_one_frame_mode_picks_the_middle_valid_frame_in_eval():
    enc = FrameEncoder(small(), frames="one").eval()
    x = torch.randn(2, 5, 3, 16, 16)
    out = enc(x, torch.tensor([5, 2]))
    assert out.seq.shape == (2, 1, enc.out_dim) and out.lengths is None
    torch.testing.assert_close(out.seq[:, 0], enc.encode_frames(torch.stack([x[0, 2], x[1, 0]])))


def test_one_frame_mode_trains_on_valid_frames_only():
    torch.manual_seed(0)
    enc = FrameEncoder(small(), frames="one").train()
    x = torch.zeros(64, 4, 3, 16, 16)
    lengths = torch.randint(1, 5, (64,))
    picked = enc._pick_one(x + torch.arange(4).view(1, 4, 1, 1, 1), lengths)[:, 0, 0, 0, 0]  # frame index
    assert torch.all(picked < lengths) and len(picked.unique()) > 1


def test_grid_pooling_needs_a_spatial_image_encoder():
    with pytest.raises(ValueError, match="spatial: true"):
        FrameEncoder(small(spatial=False), grid=2)


def test_resnet_frames_with_other_channel_counts():
    enc = FrameEncoder(ResNetEncoder(depth=18, in_channels=1)).eval()
    out = enc(torch.randn(2, 3, 1, 32, 32), torch.tensor([3, 1]))
    assert out.seq.shape == (2, 3, 512)


def test_rejects_images_instead_of_clips():
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        FrameEncoder(small())(torch.randn(2, 3, 16, 16))


def test_motion_diff_stacks_each_frame_with_its_difference_to_the_previous():
    enc = FrameEncoder(SmallCNNEncoder(in_channels=6, channels=[8, 16]), motion="diff").eval()
    x = torch.randn(2, 4, 3, 16, 16)
    lengths = torch.tensor([4, 2])
    out = enc(x, lengths)
    expected_first = enc.encode_frames(torch.cat([x[0, :1], torch.zeros_like(x[0, :1])], dim=1))
    expected_third = enc.encode_frames(torch.cat([x[0, 2:3], x[0, 2:3] - x[0, 1:2]], dim=1))
    torch.testing.assert_close(out.seq[0, 0:1], expected_first)
    torch.testing.assert_close(out.seq[0, 2:3], expected_third)
    noisy = x.clone()
    noisy[1, 2:] = 77.0  # padding after the short clip
    torch.testing.assert_close(enc(noisy, lengths).seq, out.seq)


def test_motion_diff_needs_all_frames():
    with pytest.raises(ValueError, match="frames=all"):
        FrameEncoder(SmallCNNEncoder(in_channels=6, channels=[8]), frames="one", motion="diff")
