import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from apps.cli import main
from apps.frames import FrameErrors, FramePredictionTask, frame_errors
from datamodules.frames import FrameBatch
from decoders.convlstm import ConvLSTMForecaster
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, cli_error, run_cli

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


def test_per_step_errors_are_each_rollout_steps_mse_and_average_to_the_mse():
    truth = torch.zeros(4, 3, 1, 8, 8)
    pred = truth.clone()
    pred[:, 1] = 0.5  # only the second forecast frame is wrong: 64 pixels x 0.25
    pred[:2, 2] = 1.0  # the third, in half the sequences: 64 x 1, averaged over 4 sequences
    metric = FrameErrors(output_frames=3)
    metric.update(pred[:2], truth[:2], truth[:2, -1])  # two batches, as an epoch has
    metric.update(pred[2:], truth[2:], truth[2:, -1])
    values = metric.compute()
    torch.testing.assert_close(torch.stack([values[f"mse_step0{t}"] for t in (1, 2, 3)]), torch.tensor([0.0, 16.0, 32.0]))
    torch.testing.assert_close(values["mse"], torch.tensor(16.0))  # the mean over steps
    plain = FrameErrors()  # validation's: no per-step values
    plain.update(pred, truth, truth[:, -1])
    assert not any(k.startswith("mse_step") for k in plain.compute())
    with pytest.raises(ValueError, match="output_frames=3"):
        metric.update(pred[:, :2], truth[:, :2], truth[:, -1])


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny fit through the real CLI (10 observed frames, 10 forecast, 64 x 64); returns its last.ckpt."""
    root = tmp_path_factory.mktemp("frames")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(root))
    assert printed.getvalue().strip().splitlines()[-1].startswith("best checkpoint: ")
    return str(root / "checkpoints" / "last.ckpt")


def forecast(ckpt, observed: np.ndarray) -> torch.Tensor:
    """The checkpoint's own forecast of (N, T_in, H, W) uint8 frames -> (N, T_out, H, W) in [0, 1]."""
    model = FramePredictionTask.load_from_checkpoint(ckpt, weights_only=True).eval()
    with torch.no_grad():
        return model(torch.from_numpy(observed[:, :, None]).float() / 255)[:, :, 0]


def predict_args(ckpt: str, root, *extra: str) -> list[str]:
    """`rnnsuite predict` of this checkpoint with the tiny settings, writing under `root`."""
    return ["predict", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(root),
            "--ckpt_path", ckpt, *extra]


def paths_in(message: str, root) -> list[str]:
    """Every path under `root` that a printed message names."""
    return [word.strip("(),;") for word in message.split() if word.strip("(),;").startswith(str(root))]


def test_cli_fit_test_and_predict_writes_this_models_frames(trained, tmp_path, capsys):
    ckpt = trained
    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY, "--ckpt_path", ckpt, "--metrics_json", str(metrics_path),
            "--trainer.default_root_dir", str(tmp_path))
    metrics = json.loads(metrics_path.read_text())
    assert {"test/mse", "test/mae", "test/ssim", "test/psnr", "test/mse_copy_last", "test/mse_blank"} <= set(metrics)
    steps = [metrics[f"test/mse_step{t:02d}"] for t in range(1, 11)]  # the error of each of the 10 rollout steps
    assert abs(sum(steps) / 10 - metrics["test/mse"]) < 1e-3 * metrics["test/mse"]
    assert metrics["test/mse_blank"] < metrics["test/mse_copy_last"]  # two moving digits: blank beats copying

    raw = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", raw)
    capsys.readouterr()
    # The data asks for 5 output frames; the checkpoint's 10 must win. A test file still works for predict.
    run_cli(*predict_args(ckpt, tmp_path, "--data.output_frames", "5", "--data.test_npy", str(tmp_path / "mnist_test_seq.npy"),
                          "--predictions", str(tmp_path / "pred.json")))
    out = capsys.readouterr().out
    folder = tmp_path / "pred"
    assert f"written to {tmp_path / 'pred.json'} (summary), {folder / 'predictions.npy'}" in out
    assert "from the first 10 of 20 frames" in out and "scored against the next 10 frames: mse" in out
    assert all(os.path.exists(p) for p in paths_in(out, tmp_path)) and len(paths_in(out, tmp_path)) >= 4
    assert np.load(folder / "predictions.npy").shape == (3, 10, 64, 64)
    summary = json.loads((tmp_path / "pred.json").read_text())  # what --predictions named
    assert summary["num_sequences"] == 3 and set(summary["per_sequence"]) == {f"mnist_test_seq.npy:{i}" for i in range(3)}
    assert summary["ids"] == [f"mnist_test_seq.npy:{i}" for i in range(3)] and "test/mse" in summary
    with Image.open(folder / "strip_000.png") as strip:
        assert strip.size[1] == 3 * 64 + 4  # input | truth | prediction rows
    with Image.open(folder / "sequence_002.gif") as gif:
        assert gif.n_frames == 20
    saved = torch.from_numpy(np.load(folder / "predictions.npy")).float() / 255
    assert (forecast(ckpt, raw[:10].swapaxes(0, 1)) - saved).abs().max() <= 1 / 255  # predict wrote this model's frames


@pytest.mark.parametrize("layout", ["nthw", "tnhw"])
def test_predict_forecasts_from_the_observed_frames_alone(trained, tmp_path, capsys, layout):
    """What a user has: the 10 frames seen so far, sequence-first (N, 10, H, W) or time-first like the Moving MNIST
    file (10, N, H, W), in a file of any name. The forecast is the model's, nothing is scored."""
    observed = np.random.default_rng(1).integers(0, 256, (3, 10, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "seen.npy", observed if layout == "nthw" else observed.swapaxes(0, 1))
    run_cli(*predict_args(trained, tmp_path, "--data.predict_npy", str(tmp_path / "seen.npy"),
                          "--predictions", str(tmp_path / "out")))
    out = capsys.readouterr().out
    assert "3 forecasts of 10 frames from all 10 frames of each sequence" in out and "scored" not in out
    assert f"written to {tmp_path / 'out' / 'predictions.json'} (summary)" in out  # a folder: the summary inside
    assert all(os.path.exists(p) for p in paths_in(out, tmp_path))
    summary = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert summary["ids"] == ["seen.npy:0", "seen.npy:1", "seen.npy:2"] and "test/mse" not in summary
    saved = torch.from_numpy(np.load(tmp_path / "out" / "predictions.npy")).float() / 255
    assert saved.shape == (3, 10, 64, 64) and (forecast(trained, observed) - saved).abs().max() <= 1 / 255
    with Image.open(tmp_path / "out" / "strip_000.png") as strip:
        assert strip.size[1] == 2 * 64 + 2  # input | prediction: there is no truth to draw


def test_predict_takes_the_first_observed_frames_of_longer_sequences(trained, tmp_path, capsys):
    clips = np.random.default_rng(2).integers(0, 256, (2, 15, 64, 64), dtype=np.uint8)  # 10 + 5: too few to score
    np.save(tmp_path / "clips.npy", clips)
    run_cli(*predict_args(trained, tmp_path, "--data.predict_npy", str(tmp_path / "clips.npy"),
                          "--predictions", str(tmp_path / "f.json")))
    out = capsys.readouterr().out
    assert "from the first 10 of 15 frames of each sequence" in out and "not scored" in out
    assert json.loads((tmp_path / "f.json").read_text())["context"] == "the first 10 of 15 frames of each sequence"
    saved = torch.from_numpy(np.load(tmp_path / "f" / "predictions.npy")).float() / 255
    assert (forecast(trained, clips[:, :10]) - saved).abs().max() <= 1 / 255  # frames 11-15 never reach the model


BAD_FILES = {  # file name -> (contents, what the message must say)
    "short.npy": (np.zeros((2, 5, 64, 64), np.uint8), "sequences have 5 frames, but this model forecasts from 10"),
    "ints.npy": (np.zeros((2, 10, 64, 64), np.int64), "frames have dtype int64; save them as uint8"),
    "flat.npy": (np.zeros((2, 10, 64), np.uint8), "frame array has shape (2, 10, 64); expected (T, N, H, W)"),
    "rgb.npy": (np.zeros((2, 10, 64, 64, 3), np.uint8), "frames have 3 channels, but this model reads 1-channel frames"),
    "odd.npy": (np.zeros((2, 10, 30, 30), np.uint8), "frames of 30x30 pixels, but this model folds frames into 4x4"),
    "empty.npy": (np.zeros((0, 10, 64, 64), np.uint8), "holds no sequences"),
    "garbage.npy": (b"not numpy", "cannot read the frame array"),
    "missing.npy": (None, "frame file {path} does not exist"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_predict_files_are_one_line_errors_naming_the_file(trained, tmp_path, monkeypatch, name):
    contents, expected = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    elif contents is not None:
        np.save(path, contents)
    message = cli_error(monkeypatch, *predict_args(trained, tmp_path, "--data.predict_npy", str(path),
                                                   "--predictions", str(tmp_path / "out.json")))
    assert str(path) in message and expected.format(path=path) in message
    assert not (tmp_path / "out.json").exists()


def test_predict_without_frames_says_which_option_to_give(trained, tmp_path, monkeypatch):
    message = cli_error(monkeypatch, *predict_args(trained, tmp_path))
    assert "rnnsuite predict needs --data.predict_npy FILE" in message and "at least 10 frames each" in message


def test_a_bug_in_predict_keeps_its_traceback(trained, tmp_path, monkeypatch):
    """Only bad input is shortened to a message: any other exception (here a ValueError from the model, not an
    input error) leaves main() whole."""
    np.save(tmp_path / "seen.npy", np.zeros((2, 10, 64, 64), np.uint8))

    def broken(self, batch, batch_idx):
        raise ValueError("a bug in predict_step")

    monkeypatch.setattr(FramePredictionTask, "predict_step", broken)
    monkeypatch.setattr(sys, "argv", ["rnnsuite", *predict_args(trained, tmp_path, "--data.predict_npy", str(tmp_path / "seen.npy"))])
    with pytest.raises(ValueError, match="a bug in predict_step"):
        main()


def test_strip_rows_are_named_in_a_margin():
    from apps.frames import STRIP_MARGIN, strip

    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with_truth, without = strip(frames, frames, frames), strip(frames, None, frames)
    assert with_truth.shape == (3 * 16 + 2 * 2, STRIP_MARGIN + 3 * 18 - 2, 3) and without.shape[0] == 2 * 16 + 2
    for picture, rows in ((with_truth, 3), (without, 2)):
        margin = picture[:, :STRIP_MARGIN]
        for row in range(rows):  # text drawn beside every row, nothing over the frames
            assert (margin[row * 18 : row * 18 + 16] < 128).any()
        assert (picture[:16, STRIP_MARGIN:STRIP_MARGIN + 16] == 0).all()
