import json

import numpy as np
import pytest
import torch
from PIL import Image

from apps.frames import FramePredictionTask, frame_errors
from datamodules.frames import FrameBatch
from decoders.convlstm import ConvLSTMForecaster
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, run_cli

CONFIG = str(CONFIGS / "frames.yaml")
TINY = [
    *TINY_DATA["frames.yaml"],
    "--model.decoder.embed_channels", "4", "--model.decoder.hidden_channels", "[4]", "--model.warmup_steps", "0",
]


def tiny_task(cell: str = "convlstm", **kwargs) -> FramePredictionTask:
    hidden = [8] if cell == "convlstm" else [8, 8]  # PredRNN++'s highway needs two layers
    decoder = lambda channels: ConvLSTMForecaster(channels, patch_size=4, embed_channels=8, hidden_channels=hidden,  # noqa: E731
                                                  cell=cell)
    return FramePredictionTask(decoder=decoder, input_frames=4, output_frames=3, **kwargs)


def test_frame_errors_follow_the_per_frame_sum_convention():
    truth = torch.full((2, 3, 1, 16, 16), 0.5)
    last = torch.zeros(2, 1, 16, 16)
    scores = frame_errors(truth.clone(), truth, last)
    assert torch.equal(scores["mse"], torch.zeros(2))
    torch.testing.assert_close(scores["mse_blank"], torch.full((2,), 256 * 0.25))  # summed over 256 pixels
    torch.testing.assert_close(scores["mse_copy_last"], torch.full((2,), 256 * 0.25))
    torch.testing.assert_close(frame_errors(torch.zeros_like(truth), truth, last)["mae"], torch.full((2,), 128.0))
    assert torch.allclose(scores["ssim"], torch.ones(2))


def test_evaluation_reads_no_future_frames():
    torch.manual_seed(0)
    task = tiny_task().eval()
    frames = torch.rand(2, 7, 1, 16, 16)
    corrupted = frames.clone()
    corrupted[:, 4:] = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        loss, outputs = task.compute_loss(FrameBatch(frames, ["a", "b"]), "val")
        loss2, outputs2 = task.compute_loss(FrameBatch(corrupted, ["a", "b"]), "val")
    assert torch.equal(outputs, outputs2)  # a leak of the truth into the rollout would change the predictions
    assert loss != loss2  # while the loss does compare against the (changed) truth


@pytest.mark.parametrize("cell", ["convlstm", "predrnn", "predrnn++"])
def test_evaluation_with_reverse_sampling_reads_true_observed_frames_and_no_future(cell):
    """NaN future frames leave the forecast unchanged; reverse scheduled sampling (here at probability 1, which in
    training would replace every observed frame after the first) is off at evaluation."""
    torch.manual_seed(0)
    task = tiny_task(cell, reverse_scheduled_sampling=True, reverse_sampling_max=1.0).eval()
    task.training_progress = lambda: 0.0  # the start of training: the reverse probability is at its maximum
    frames = torch.rand(2, 7, 1, 16, 16)
    poisoned = frames.clone()
    poisoned[:, 4:] = float("nan")
    with torch.no_grad():
        _, outputs = task.compute_loss(FrameBatch(frames, ["a", "b"]), "val")
        _, from_poisoned = task.compute_loss(FrameBatch(poisoned, ["a", "b"]), "test")
        truth_read = task.decoder(frames[:, :4], 3).future  # every observed frame read as it is
        own_read = task.decoder(frames[:, :4], 3, reverse_sampling_prob=1.0).future
    assert torch.isfinite(outputs).all()
    torch.testing.assert_close(from_poisoned, outputs)
    torch.testing.assert_close(outputs, truth_read)
    assert not torch.allclose(outputs, own_read)  # so the test could see reverse sampling if it leaked in


def test_reverse_sampling_probability_falls_to_zero_and_is_logged(monkeypatch):
    task = tiny_task(reverse_scheduled_sampling=True, reverse_sampling_schedule="exponential",
                     reverse_sampling_start=0.2, reverse_sampling_end=0.6, reverse_sampling_max=0.5)
    logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    probs = []
    for step in range(11):
        monkeypatch.setattr(task, "training_progress", lambda: step / 10)
        probs.append(task.reverse_sampling_prob())
        assert logged["train/reverse_sampling_prob"] == probs[-1]
    assert probs[0] == probs[2] == 0.5 and probs[6] == probs[10] == 0.0  # flat, falling between start and end, 0
    assert all(b <= a for a, b in zip(probs, probs[1:])) and 0.0 < probs[4] < 0.25  # exponential: fast first
    assert tiny_task().reverse_sampling_prob() == 0.0  # off by default
    with pytest.raises(ValueError, match="reverse_sampling_max must be in"):
        tiny_task(reverse_scheduled_sampling=True, reverse_sampling_max=0.0)
    with pytest.raises(ValueError, match="start < end"):
        tiny_task(reverse_scheduled_sampling=True, reverse_sampling_start=0.5, reverse_sampling_end=0.5)


def test_training_with_reverse_sampling_reads_its_own_predictions(monkeypatch):
    torch.manual_seed(0)
    task = tiny_task("predrnn", reverse_scheduled_sampling=True, reverse_sampling_max=1.0)
    monkeypatch.setattr(task, "training_progress", lambda: 0.0)
    monkeypatch.setattr(task, "log", lambda *a, **kw: None)
    frames = torch.rand(2, 7, 1, 16, 16)
    changed = frames.clone()
    changed[:, 1:4] = torch.rand(2, 3, 1, 16, 16)  # every observed frame but the first
    with torch.no_grad():
        _, outputs = task.compute_loss(FrameBatch(frames, ["a", "b"]), "train")
        _, outputs_changed = task.compute_loss(FrameBatch(changed, ["a", "b"]), "train")
    # Future teacher forcing is random, so compare the first future frame: it follows the observed part only.
    torch.testing.assert_close(outputs[:, 0], outputs_changed[:, 0])


@pytest.mark.parametrize("cell", ["convlstm", "predrnn++"])
def test_overfitting_one_batch_drives_the_loss_down(cell):
    torch.manual_seed(0)
    task = tiny_task(cell, context_weight=0.0)
    clip = torch.zeros(4, 7, 1, 16, 16)
    for t in range(7):  # a bright square moving right by two pixels per frame
        clip[:, t, :, 4:8, t * 2 : t * 2 + 4] = 1.0
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss, _ = task.compute_loss(FrameBatch(clip, ["x"] * 4), "val")  # own-prediction rollouts throughout
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_cli_fit_test_and_predict_writes_this_models_frames(tmp_path, capsys):
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("best checkpoint: ")
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY, "--ckpt_path", ckpt, "--metrics_json", str(metrics_path))
    metrics = json.loads(metrics_path.read_text())
    assert {"test/mse", "test/mae", "test/ssim", "test/psnr", "test/mse_copy_last", "test/mse_blank"} <= set(metrics)
    assert metrics["test/mse_blank"] < metrics["test/mse_copy_last"]  # two moving digits: blank beats copying

    raw = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", raw)
    # The data asks for 5 output frames; the checkpoint's 10 must win.
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY, "--data.output_frames", "5", "--ckpt_path", ckpt,
            "--data.test_npy", str(tmp_path / "mnist_test_seq.npy"), "--predictions", str(tmp_path / "pred.json"))
    folder = tmp_path / "pred"
    assert f"written to {folder}/" in capsys.readouterr().out  # the folder it wrote, not the .json it was given
    assert np.load(folder / "predictions.npy").shape == (3, 10, 64, 64)
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["num_sequences"] == 3 and set(summary["per_sequence"]) == {f"mnist_test_seq.npy:{i}" for i in range(3)}
    with Image.open(folder / "strip_000.png") as strip:
        assert strip.size[1] == 3 * 64 + 4  # input | truth | prediction rows
    with Image.open(folder / "sequence_002.gif") as gif:
        assert gif.n_frames == 20

    model = FramePredictionTask.load_from_checkpoint(ckpt, weights_only=True).eval()
    observed = torch.from_numpy(raw[:10].swapaxes(0, 1)[:, :, None]).float() / 255
    with torch.no_grad():
        saved = torch.from_numpy(np.load(folder / "predictions.npy")).float() / 255
        assert (model(observed)[:, :, 0] - saved).abs().max() <= 1 / 255  # predict wrote this model's frames
