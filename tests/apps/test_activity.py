import json

import numpy as np
import pytest
import torch

from apps.activity import ActivityTask, VideoAccuracy
from apps.media import draw_confusion_matrix
from datamodules.activity import ActivityDataModule
from datamodules.synthetic.motion_clips import CLASS_NAMES
from decoders.classifier import RNNClassifier
from encoders import SmallCNNEncoder
from encoders.video import FrameEncoder
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, overfit, run_cli
from tests.datamodules.test_activity_data import write_video

CONFIG = str(CONFIGS / "activity.yaml")
TINY = [
    *TINY_DATA["activity.yaml"],
    "--model.encoder.image_encoder.channels", "[8, 16]",
    "--model.encoder.grid", "2",
    "--model.decoder.hidden_dim", "16",
    "--model.warmup_steps", "0",
]


def fit(root, capsys, *extra):
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(root), *extra)
    return capsys.readouterr().out


def tiny_task(**kwargs):
    return ActivityTask(
        encoder=FrameEncoder(SmallCNNEncoder(channels=[8, 16], spatial=True), grid=2),
        decoder=lambda in_dim, num_classes: RNNClassifier(in_dim, num_classes, hidden_dim=16),
        class_names=list(CLASS_NAMES),
        **kwargs,
    )


def test_cli_fit_test_and_predict(tmp_path, capsys):
    out = fit(tmp_path, capsys, "--trainer.max_epochs", "2")
    best = out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    assert best.startswith(str(tmp_path / "checkpoints" / "best-"))
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["hyper_parameters"]["class_names"] == list(CLASS_NAMES)
    assert "val/acc" in str(ckpt["callbacks"])

    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", best, "--metrics_json", str(metrics_path))
    metrics = json.loads(metrics_path.read_text())
    assert {"test/acc", "test/acc_top5", "test/video_acc", "test/loss"} <= set(metrics)
    # the logged metrics are those of this checkpoint's logits on the (one) test batch, recomputed by hand
    model = ActivityTask.load_from_checkpoint(best, weights_only=True).eval()
    batch = next(iter(ActivityDataModule(num_frames=4, image_size=16, num_train_clips=16, num_val_clips=8,
                                         num_test_clips=8, batch_size=8).test_dataloader()))
    with torch.no_grad():
        logits = model(batch.frames, batch.lengths)
    top5 = logits.topk(5, dim=-1).indices
    assert metrics["test/acc"] == pytest.approx((logits.argmax(-1) == batch.labels).float().mean().item())
    assert metrics["test/acc_top5"] == pytest.approx((top5 == batch.labels[:, None]).any(-1).float().mean().item())
    assert metrics["test/video_acc"] == pytest.approx(metrics["test/acc"])  # one clip per generated video

    videos = tmp_path / "videos"
    write_video(videos / "long.mp4", 10, (40, 90, 160))
    write_video(videos / "short.mp4", 2, (160, 90, 40))  # shorter than num_frames: classified from 2 frames
    (videos / "notes.txt").write_text("not a video")
    predictions = tmp_path / "predictions.json"
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", best, "--data.predict_dir", str(videos), "--predictions", str(predictions))
    result = json.loads(predictions.read_text())
    assert set(result) == {"long.mp4", "short.mp4"}
    for top in result.values():
        assert len(top) == 5 and {t["label"] for t in top} <= set(CLASS_NAMES)
        probs = [t["prob"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5


def test_padded_frames_do_not_change_the_prediction():
    torch.manual_seed(0)
    task = tiny_task().eval()
    clips = torch.randn(3, 6, 3, 16, 16)
    lengths = torch.tensor([6, 4, 2])
    padded = clips.clone()
    padded[1, 4:] = torch.randn(2, 3, 16, 16) * 50
    padded[2, 2:] = 0
    with torch.no_grad():
        logits = task(clips, lengths)
        torch.testing.assert_close(task(padded, lengths), logits)
        alone = task(clips[2:3, :2], None)  # the short clip on its own, without padding
    torch.testing.assert_close(alone[0], logits[2], atol=1e-5, rtol=1e-5)


def test_overfitting_one_batch_drives_the_loss_down():
    torch.manual_seed(0)
    dm = ActivityDataModule(num_frames=4, image_size=16, num_train_clips=8, num_val_clips=10, num_test_clips=8, batch_size=10)
    task = tiny_task()
    batch = next(iter(dm.val_dataloader()))
    losses = overfit(task, batch, steps=40, lr=3e-3)
    assert losses[-1] < 0.25 * losses[0]


def test_video_accuracy_averages_the_clips_of_a_video():
    metric = VideoAccuracy()
    # video a: two clips say class 0 weakly, one says class 1 strongly -> mean picks class 1 (wrong)
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [0.9, 0.1]])
    metric.update(probs.log(), torch.tensor([0, 0, 0, 0]), ["a", "a", "a", "b"])  # logits
    assert metric.compute().item() == pytest.approx(0.5)
    metric.reset()
    metric.update(probs[:2].log(), torch.tensor([0, 0]), ["a", "a"])
    assert metric.compute().item() == 1.0


def test_video_accuracy_merges_clips_of_one_video_seen_by_different_ranks():
    # Under DDP each rank sees some clips; "cat" sync concatenates the states. Videos must be keyed the same
    # way in every process: rank 0 sees a then b, rank 1 sees b then a.
    ranks = [VideoAccuracy(), VideoAccuracy()]
    ranks[0].update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log(), torch.tensor([0, 1]), ["a", "b"])
    ranks[1].update(torch.tensor([[0.4, 0.6], [0.7, 0.3]]).log(), torch.tensor([1, 0]), ["b", "a"])
    synced = VideoAccuracy()
    for state in ("probs", "targets", "videos"):
        setattr(synced, state, [t for rank in ranks for t in getattr(rank, state)])
    assert synced.compute().item() == 1.0  # a: mean (0.8, 0.2) -> 0; b: mean (0.3, 0.7) -> 1


def test_confusion_matrix_picture():
    matrix = np.array([[5, 0, 1], [0, 3, 0], [2, 0, 0]])
    picture = draw_confusion_matrix(matrix, ["left", "right", "a_long_class_name"])
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[0] == picture.shape[1] > 3 * 28
    # row "right" is all correct: its diagonal cell is solid blue; with no counts no cell is coloured
    assert (picture == [0, 0, 255]).all(-1).sum() > 20 * 20
    blank = draw_confusion_matrix(np.zeros((3, 3), dtype=int), ["a", "b", "c"])
    assert (blank == [0, 0, 255]).all(-1).sum() == 0


def test_task_needs_class_names():
    with pytest.raises(ValueError, match="class names"):
        ActivityTask(encoder=FrameEncoder(SmallCNNEncoder(channels=[8])), decoder=RNNClassifier, class_names=None)


def test_clip_features_must_be_the_encoders_appearance_width():
    from functools import partial

    encoder = FrameEncoder(SmallCNNEncoder(channels=[8, 16], spatial=True), motion="correlation")
    assert encoder.appearance_dim == 16
    task = ActivityTask(encoder=encoder, decoder=partial(RNNClassifier, clip_features=16), class_names=["a", "b"])
    assert task.decoder.rnn.input_size == encoder.out_dim - 16  # the LSTM reads the motion features only
    with pytest.raises(ValueError, match="set clip_features: 16"):
        ActivityTask(encoder=encoder, decoder=partial(RNNClassifier, clip_features=12), class_names=["a", "b"])
