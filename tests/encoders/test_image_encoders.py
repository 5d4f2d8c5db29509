import urllib.error

import pytest
import torch
import torchvision

from encoders import Encoded, Encoder, ResNetEncoder, get_encoder_class, list_encoders, register_encoder
from encoders.image import load_resnet_weights

# Small, fast settings for each registered image encoder (registry entries without one are skipped below).
IMAGE_ENCODER_ARGS = {"small_cnn": {"channels": [8, 16]}, "resnet": {"depth": 18}, "efficientnet_lite": {"pretrained": False}}


def image_encoders():
    return [name for name in list_encoders() if name in IMAGE_ENCODER_ARGS]


# Registered encoders that do not read images, and what they read instead (tests/encoders/test_<kind>.py).
NOT_IMAGE = {"log_mel": "audio", "frames": "video clips", "word_embedding": "word ids"}


def test_every_registered_encoder_is_tested_here_or_declared_not_an_image_encoder():
    unclassified = set(list_encoders()) - set(IMAGE_ENCODER_ARGS) - set(NOT_IMAGE)
    assert not unclassified, f"add {sorted(unclassified)} to IMAGE_ENCODER_ARGS (or NOT_IMAGE) in {__file__}"
    assert set(IMAGE_ENCODER_ARGS) <= set(list_encoders())


@pytest.mark.parametrize("name", image_encoders())
@pytest.mark.parametrize("spatial", [False, True])
def test_shapes(name, spatial):
    enc = get_encoder_class(name)(**IMAGE_ENCODER_ARGS[name], spatial=spatial).eval()
    out = enc(torch.randn(2, 3, 64, 64))
    assert isinstance(out, Encoded) and out.lengths is None
    B, T, D = out.seq.shape
    assert (B, D) == (2, enc.out_dim)
    assert T > 1 if spatial else T == 1


@pytest.mark.parametrize("name", image_encoders())
def test_sample_does_not_depend_on_batch(name):
    enc = get_encoder_class(name)(**IMAGE_ENCODER_ARGS[name]).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).seq[1:2], enc(x[1:2]).seq, atol=1e-5, rtol=1e-4)


def test_gray_input_channels():
    enc = get_encoder_class("small_cnn")(in_channels=1, channels=[8])
    assert enc(torch.randn(2, 1, 32, 32)).seq.shape == (2, 1, 8)


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("small_cnn")(Encoder)
    with pytest.raises(KeyError, match="registered encoders"):
        get_encoder_class("no_such_encoder")


def test_resnet_loads_local_weights_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    enc = ResNetEncoder(depth=18, weights=str(path))
    torch.testing.assert_close(enc.body[0].weight, reference.conv1.weight)


def test_resnet_unreachable_weights_give_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="not in the torch hub cache.*--model.encoder.weights"):
        load_resnet_weights(18, "IMAGENET1K_V1")


def test_resnet_unknown_weights_name():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        load_resnet_weights(18, "NOT_A_WEIGHTS_NAME")


@pytest.mark.parametrize("spatial", [False, True])
def test_small_cnn_channels_last_matches_default_layout(spatial):
    """channels_last changes the memory layout only: same weights -> same outputs and gradients, NHWC convolutions."""
    from encoders.image import SmallCNNEncoder

    torch.manual_seed(0)
    ref = SmallCNNEncoder(channels=[8, 16], spatial=spatial)
    nhwc = SmallCNNEncoder(channels=[8, 16], spatial=spatial, channels_last=True)
    nhwc.load_state_dict(ref.state_dict())  # copies values into the NHWC parameters, keeping their layout
    convs = [m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.randn(3, 3, 32, 32)
    out_ref, out = ref(x).seq, nhwc(x).seq
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p_ref), p in zip(ref.named_parameters(), nhwc.parameters()):
        # float sums run in another order in NHWC: compare relative to the gradient's scale
        scale = p_ref.grad.abs().max().item()
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-4 * scale, msg=name)
    # and the state dict loads back into the default layout (checkpoints move between the two)
    SmallCNNEncoder(channels=[8, 16], spatial=spatial).load_state_dict(nhwc.state_dict())
