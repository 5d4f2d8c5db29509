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


# --- motion: correlation -------------------------------------------------------------------------------------

def test_correlation_motion_is_every_displacement_matched_softmaxed_and_pooled():
    enc = FrameEncoder(small(spatial=True), motion="correlation", correlation_radius=2, correlation_regions=2,
                       correlation_temperature=0.2).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        rows = enc.encode_frames(x.flatten(0, 1)).view(2, 3, -1)
        out = enc(x).seq
    C, side = 16, 8  # SmallCNN [8, 16] at 32 px: 16 channels, 8 x 8 map
    assert out.shape == (2, 3, enc.out_dim) and enc.out_dim == C + (25 + 2) * 4
    maps = rows[..., C:].view(2, 3, C, side, side)
    torch.testing.assert_close(maps.norm(dim=2), torch.ones(2, 3, side, side))  # stored L2-normalised
    torch.testing.assert_close(out[..., :C], rows[..., :C])  # appearance: the pooled features
    assert torch.all(out[:, 0, C:] == 0)  # no motion before the first frame
    pad = torch.nn.functional.pad
    for b in range(2):
        for t in (1, 2):
            prev = pad(maps[b, t - 1], (2, 2, 2, 2))
            corr = torch.stack([(maps[b, t] * prev[:, 2 + dy:2 + dy + side, 2 + dx:2 + dx + side]).sum(0)
                                for dy in range(-2, 3) for dx in range(-2, 3)])  # (25, h, w)
            probs = (corr / 0.2).softmax(0)
            flow = torch.stack([(probs * enc.displacements[i].view(25, 1, 1)).sum(0) for i in (0, 1)])
            pool = torch.nn.functional.adaptive_avg_pool2d
            expected = torch.cat([pool(probs, 2).flatten() * 25, pool(flow, 2).flatten()])
            torch.testing.assert_close(out[b, t, C:], expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def astronaut():
    """scikit-image's astronaut photograph, 512 px, ImageNet-normalised, and a frozen EfficientNet-Lite0 matcher
    with the affine fit."""
    data = pytest.importorskip("skimage.data")
    from encoders import EfficientNetLiteEncoder

    enc = FrameEncoder(EfficientNetLiteEncoder(pretrained=True), motion="correlation", correlation_affine=True).eval()
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 512, 512)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return enc, (photo - mean) / std


def test_correlation_tells_the_direction_of_a_pan_on_a_real_photograph(astronaut):
    enc, photo = astronaut
    photo = torch.nn.functional.interpolate(photo, size=320, mode="bilinear", antialias=True)[0]

    def clip(dx: int, dy: int):  # a 224 px camera window moving (dx, dy) pixels a frame over the photograph
        return torch.stack([photo[:, 48 + dy * t:272 + dy * t, 48 + dx * t:272 + dx * t] for t in range(-2, 3)])[None]

    K = 49 * 9
    with torch.no_grad():
        seqs = {name: enc(clip(*move)).seq[0, 1:] for name, move in
                {"right": (16, 0), "left": (-16, 0), "down": (0, 16), "up": (0, -16)}.items()}
    flows = {name: seq[:, 1280 + K:1280 + K + 18].view(4, 2, 9).mean((0, 2)) for name, seq in seqs.items()}
    # the camera moves right: what frame t shows at x, frame t-1 showed one stride-16 cell to the right (+x)
    assert flows["right"][0] > 0.4 and flows["left"][0] < -0.4, flows
    assert flows["down"][1] > 0.4 and flows["up"][1] < -0.4, flows
    assert all(abs(float(flows[n][1])) < 0.3 for n in ("right", "left")), flows  # no vertical motion in a pan
    shift = {name: seq[:, -6:-4].mean(0) for name, seq in seqs.items()}  # the affine fit's translation agrees
    assert shift["right"][0] > 0.4 and shift["left"][0] < -0.4 and shift["down"][1] > 0.4, shift


def test_affine_fit_tells_zoom_from_rotation_on_a_real_photograph(astronaut):
    import math

    enc, photo = astronaut

    def clip(scale: float = 1.0, degrees: float = 0.0):  # a camera zooming / rolling by that much a frame
        frames = []
        for t in range(4):
            a, s = math.radians(degrees * t), 0.45 / scale ** t  # 0.45: a 230 px window of the 512 px photograph
            theta = torch.tensor([[[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]]])
            grid = torch.nn.functional.affine_grid(theta, (1, 3, 224, 224), align_corners=False)
            frames.append(torch.nn.functional.grid_sample(photo, grid, align_corners=False)[0])
        return torch.stack(frames)[None]

    with torch.no_grad():
        fits = {name: enc(clip(**move)).seq[0, 1:, -6:].mean(0) for name, move in
                {"in": {"scale": 1.04}, "out": {"scale": 1 / 1.04}, "cw": {"degrees": 3}, "ccw": {"degrees": -3}}.items()}
    div, curl = {n: float(f[2]) for n, f in fits.items()}, {n: float(f[3]) for n, f in fits.items()}
    # zooming in, what frame t shows at x, frame t-1 showed nearer the centre: the flow converges
    assert div["in"] < -0.1 and div["out"] > 0.1, fits
    assert curl["cw"] > 0.1 and curl["ccw"] < -0.1, fits
    assert all(abs(curl[n]) < 0.6 * abs(div[n]) for n in ("in", "out")), fits  # a zoom is not a rotation
    assert all(abs(div[n]) < 0.6 * abs(curl[n]) for n in ("cw", "ccw")), fits


def test_affine_fit_recovers_an_affine_flow_and_ignores_weightless_cells():
    side = 6
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    (a0, a1, a2), (b0, b1, b2) = (0.5, 0.3, -0.2), (-0.1, 0.4, 0.25)
    flow = torch.stack([a0 + a1 * x + a2 * y, b0 + b1 * x + b2 * y])[None]  # (1, 2, h, w)
    weight = torch.ones(1, side, side)
    weight[0, 0, 0] = 0
    flow[0, :, 0, 0] = 9.0  # an outlier with no weight changes nothing
    fit = FrameEncoder.affine_motion(flow, weight)[0]
    expected = torch.tensor([a0, b0, a1 + b2, b1 - a2, a1 - b2, a2 + b1])
    torch.testing.assert_close(fit, expected, atol=2e-3, rtol=0)
    enc = FrameEncoder(small(spatial=True), motion="correlation", correlation_radius=1, correlation_regions=2,
                       correlation_affine=True)
    assert enc.out_dim == 16 + (9 + 2) * 4 + 6 and enc(torch.randn(2, 3, 3, 16, 16)).seq.shape == (2, 3, enc.out_dim)
    flow_only = FrameEncoder(small(spatial=True), motion="correlation", correlation_radius=1, correlation_regions=2,
                             correlation_affine=True, correlation_histograms=False)
    flow_only.load_state_dict(enc.state_dict())  # the same CNN
    x = torch.randn(2, 3, 3, 16, 16)
    full, compact = enc.eval()(x).seq, flow_only.eval()(x).seq
    assert flow_only.out_dim == 16 + 2 * 4 + 6
    torch.testing.assert_close(compact[..., 16:], full[..., 16 + 9 * 4:])  # the same flow and fit, no histograms
    for bad in ({"correlation_affine": True}, {"correlation_histograms": False}):
        with pytest.raises(ValueError, match="motion: correlation"):
            FrameEncoder(small(spatial=True), **bad)


def test_the_feature_cache_is_shared_by_matching_options_but_not_by_motion_modes():
    from apps.activity import ActivityTask
    from decoders.classifier import RNNClassifier

    def source(**kwargs):
        torch.manual_seed(0)
        task = ActivityTask(encoder=FrameEncoder(small(spatial=True), **kwargs), decoder=RNNClassifier,
                            class_names=["a", "b"], freeze_encoder=True)
        return task.feature_source()

    base = source(motion="correlation")
    assert base.key == source(motion="correlation", correlation_radius=1, correlation_affine=True).key
    assert base.key != source(motion="none").key and source(motion="none").key != source(motion="none", grid=2).key


def test_correlation_works_from_cached_rows_and_trains_the_image_encoder():
    enc = FrameEncoder(small(spatial=True), motion="correlation", correlation_radius=1, correlation_regions=2)
    enc.check_cacheable()  # the matching runs after the cache
    x, lengths = torch.randn(2, 4, 3, 16, 16), torch.tensor([4, 2])
    enc.eval()
    with torch.no_grad():
        rows = torch.zeros(2, 4, enc.encode_frames(x[0]).shape[-1])
        rows[0], rows[1, :2] = enc.encode_frames(x[0]), enc.encode_frames(x[1, :2])
        torch.testing.assert_close(enc.from_frame_features(rows, lengths).seq, enc(x, lengths).seq)
    enc.train()
    enc(x, lengths).seq[..., 16:].sum().backward()  # the motion stream alone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_correlation_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="spatial: true"):
        FrameEncoder(small(spatial=False), motion="correlation")
    with pytest.raises(ValueError, match="grid=1"):
        FrameEncoder(small(spatial=True), grid=2, motion="correlation")
    with pytest.raises(ValueError, match="previous frame"):
        FrameEncoder(small(spatial=True), frames="one", motion="correlation")
    one = FrameEncoder(small(spatial=True), motion="correlation")(torch.randn(2, 1, 3, 16, 16)).seq
    assert one.shape == (2, 1, 16 + 51 * 9) and torch.all(one[..., 16:] == 0)
