"""The web demo (apps/serve.py), without a browser or network: every tab's handler called on a sample input gives
what the Python API gives, the Blocks app has a tab per shipped checkpoint, and it answers over HTTP on a local port."""
import os
import socket

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the serve extra: pip install -e '.[serve]'")

from apps.samples import sample_frames  # noqa: E402
from apps.serve import build_app, handlers, load_predictors, main, shipped_tasks  # noqa: E402


@pytest.fixture(scope="module")
def predictors():
    return load_predictors()


@pytest.fixture(scope="module")
def fns(predictors, tmp_path_factory):
    return handlers(predictors, str(tmp_path_factory.mktemp("serve")))


def test_a_tab_per_shipped_checkpoint(predictors, fns):
    assert set(fns) == set(shipped_tasks()) == set(predictors)
    app = build_app(predictors)
    tabs = [c for c in app.config["components"] if c["type"] in ("tab", "tabitem")]
    assert [t["props"]["label"] for t in tabs] == shipped_tasks()


def test_captioning_tab(predictors, fns):
    image = fns["captioning"]["sample"](3)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    caption, overlay = fns["captioning"]["predict"](image)
    assert caption == predictors["captioning"].predict(image) and len(caption.split()) >= 3
    assert overlay is None  # the shipped decoder does not attend


def test_activity_tab(predictors, fns):
    video, info = fns["activity"]["sample"](1)
    labels = fns["activity"]["predict"](video)
    assert len(labels) == 5 and labels == {r["label"]: r["prob"] for r in predictors["activity"].predict(video)}
    assert info == f"generated clip of class {max(labels, key=labels.get)}"  # the shipped model gets this one right


def test_phonemes_tab(predictors, fns):
    (rate, wave), spoken = fns["phonemes"]["sample"]("the cat sat on the mat")
    text, rows = fns["phonemes"]["predict"]((rate, wave))
    assert text == predictors["phonemes"].predict(wave, sample_rate=rate)["phonemes"]
    assert [r[0] for r in rows] == text.split() and all(r[1] <= r[2] for r in rows)
    # a microphone gives int16 samples at its own rate: scaled and resampled by the same reader
    mic = (np.interp(np.arange(0, len(wave), rate / 48000), np.arange(len(wave)), wave) * 32767).astype(np.int16)
    mic_text, _ = fns["phonemes"]["predict"]((48000, mic))
    assert len(mic_text.split()) >= len(text.split()) // 2


def test_frames_tab(predictors, fns, tmp_path):
    gif, info = fns["frames"]["sample"](0)
    with Image.open(gif) as animation:
        assert animation.n_frames == 20  # 10 observed + 10 forecast
    assert "left: the truth" in info  # a drawn sequence holds its next 10 frames
    np.save(tmp_path / "seen.npy", sample_frames(2)[:, :10])
    gif, info = fns["frames"]["predict"](str(tmp_path / "seen.npy"))
    assert os.path.isfile(gif) and info.startswith("2 forecast(s) of 10 frames from 10 observed")
    with pytest.raises(ValueError, match="10 observed frames"):  # Gradio shows the message
        fns["frames"]["predict"](sample_frames(1)[:, :4])


def test_charlm_and_sentiment_tabs(predictors, fns):
    text = fns["charlm"]["predict"]("KING.", 40)
    assert text.startswith("KING.") and len(text) == 45
    labels = fns["sentiment"]["predict"]("a gorgeous, witty and moving film")
    assert max(labels, key=labels.get) == "positive" and sum(labels.values()) == pytest.approx(1, abs=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_answers_on_a_local_port(predictors):
    from gradio_client import Client

    app = build_app({"sentiment": predictors["sentiment"]})
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result = client.predict("dull, tedious and far too long", api_name="/sentiment")
        assert result["label"] == "negative"
    finally:
        app.close()


def test_rnnsuite_serve_refuses_a_task_without_a_shipped_checkpoint(capsys):
    from apps.cli import main as rnnsuite

    with pytest.raises(SystemExit):
        rnnsuite(["serve", "--tasks", "nonexistent"])  # the CLI hands `serve` to apps/serve.py
    assert "invalid choice: 'nonexistent'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--port" in capsys.readouterr().out


def test_captioning_tab_shows_the_attention_of_an_attending_checkpoint(tmp_path):
    """A checkpoint of configs/captioning_attention.yaml: the tab's overlay is the image and a heat map per word."""
    from apps.api import load
    from apps.serve import handlers as make_handlers
    from tests.conftest import TINY_DATA, TINY_TRAINER, run_cli

    run_cli("fit", "--config", "configs/captioning_attention.yaml", *TINY_TRAINER,
            *TINY_DATA["captioning_attention.yaml"], "--trainer.default_root_dir", str(tmp_path))
    ckpt = next(tmp_path.rglob("*.ckpt"))
    predictor = load(str(ckpt))
    assert build_app({"captioning": predictor})  # the overlay widget is built visible for an attending decoder
    caption, overlay = make_handlers({"captioning": predictor}, str(tmp_path))["captioning"]["predict"](
        sample_image_array())
    assert isinstance(caption, str)
    assert overlay is not None and overlay.ndim == 3 and overlay.shape[2] == 3
    assert overlay.shape[1] > overlay.shape[0]  # the image beside one heat map per word, in a strip


def sample_image_array():
    from apps.samples import sample_image

    return sample_image(0)[0]
