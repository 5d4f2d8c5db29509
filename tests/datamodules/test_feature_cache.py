"""The feature cache: built once, keyed by items, transform and encoder; what the datamodules' batches carry."""
import json
import os

import numpy as np
import pytest
import torch

from apps.activity import ActivityTask
from apps.captioning import CaptioningTask
from datamodules.activity import ActivityDataModule
from datamodules.captioning import CaptioningDataModule
from datamodules.feature_cache import FeatureSource, load_or_build, module_fingerprint
from decoders import CaptionDecoder
from decoders.classifier import RNNClassifier
from encoders import FrameEncoder, SmallCNNEncoder
from tests.datamodules.test_activity_data import write_video


class Counting:
    """A FeatureSource around a small CNN that counts the pixels it encoded."""

    def __init__(self, spatial=False, seed=0):
        torch.manual_seed(seed)
        self.encoder = SmallCNNEncoder(channels=[4, 8], spatial=spatial)
        self.seen = 0

        def fn(pixels):
            self.seen += len(pixels)
            return self.encoder(pixels).seq

        self.source = FeatureSource(self.encoder, fn, tag="seq", batch_size=5)


def pixels(i):
    return torch.full((2, 3, 8, 8), float(i)) if i != 3 else None  # item 3 is unreadable


def test_table_is_built_once_and_keyed_by_items_and_encoder(tmp_path):
    enc = Counting()
    keys = [f"file{i}" for i in range(6)]
    table = load_or_build("t", keys, [2] * 6, "resize", enc.source, pixels, root=str(tmp_path))
    assert enc.seen == 10 and table.valid.tolist() == [True, True, True, False, True, True]
    with torch.no_grad():
        expected = enc.encoder.eval()(pixels(4)).seq.numpy()
    np.testing.assert_allclose(table[4], expected, rtol=2e-3, atol=1e-3)  # stored as float16
    assert not table[3].any() and table.row_shape == (1, 8)
    load_or_build("t", keys, [2] * 6, "resize", enc.source, pixels, root=str(tmp_path))
    assert enc.seen == 10  # second time: read, not encoded
    load_or_build("t", keys[:5] + ["changed"], [2] * 6, "resize", enc.source, pixels, root=str(tmp_path))
    load_or_build("t", keys, [2] * 6, "other transform", enc.source, pixels, root=str(tmp_path))
    with torch.no_grad():
        enc.encoder.body[0].weight.add_(1.0)  # new weights: a new table
    load_or_build("t", keys, [2] * 6, "resize", enc.source, pixels, root=str(tmp_path))
    assert enc.seen == 40
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # written under a temporary name, then renamed


def test_fingerprint_tells_weights_and_arguments_apart():
    a, b = Counting(seed=0).encoder, Counting(seed=0).encoder
    assert module_fingerprint(a) == module_fingerprint(b)
    assert module_fingerprint(a) != module_fingerprint(Counting(seed=1).encoder)
    assert module_fingerprint(a) != module_fingerprint(Counting(spatial=True, seed=0).encoder)  # same weights


def test_frame_count_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="item 0 .* 2 frames, expected 3"):
        load_or_build("t", ["a"], [3], "x", Counting().source, pixels, root=str(tmp_path))


def caption_task(dm, **kwargs):
    return CaptioningTask(SmallCNNEncoder(channels=[4, 8], spatial=True), lambda d, v: CaptionDecoder(
        d, v, embed_dim=8, hidden_dim=16, cell="lstm", num_layers=1, dropout=0.0), vocab=dm.vocab, **kwargs)


def attach(task, dm):
    task._trainer = type("T", (), {"datamodule": dm})()  # what Lightning sets before calling setup()
    task.setup("fit")


def test_captioning_batches_carry_cached_features_and_the_loss_is_the_same():
    dm = CaptioningDataModule(num_train_scenes=12, num_val_scenes=6, num_test_scenes=6, batch_size=6)
    task = caption_task(dm, freeze_encoder=True, cache_features=True).eval()
    plain = next(iter(dm.val_dataloader()))
    attach(task, dm)
    train, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert train.images is None and train.features.shape == (6, 256, 8)  # (B, T_enc = 16 x 16 grid, D)
    assert val.images is not None and torch.equal(val.images, plain.images)  # shown in the logged samples
    with torch.no_grad():
        torch.testing.assert_close(val.features, task.encoder(val.images).seq, rtol=2e-3, atol=2e-3)
        cached, _ = task.compute_loss(val, "val")
        uncached, _ = task.compute_loss(val._replace(features=None), "val")
    torch.testing.assert_close(cached, uncached, rtol=1e-3, atol=1e-3)


def test_cached_features_need_a_frozen_encoder_and_no_augmentation():
    dm = CaptioningDataModule(num_train_scenes=4, num_val_scenes=2, num_test_scenes=2)
    with pytest.raises(ValueError, match="needs --model.freeze_encoder true"):
        attach(caption_task(dm, cache_features=True), dm)
    dm = CaptioningDataModule(num_train_scenes=4, num_val_scenes=2, num_test_scenes=2, augment=True)
    with pytest.raises(ValueError, match="exclude each other"):
        attach(caption_task(dm, cache_features=True, freeze_encoder=True), dm)


def activity_task(dm, motion="none"):
    encoder = FrameEncoder(SmallCNNEncoder(in_channels=6 if motion == "diff" else 3, channels=[4, 8]), motion=motion)
    return ActivityTask(encoder, lambda d, c: RNNClassifier(d, c, hidden_dim=8), class_names=dm.class_names,
                        freeze_encoder=True, cache_features=True)


def test_activity_clips_are_picked_from_cached_per_frame_features(tmp_path):
    root = tmp_path / "videos"
    for label, name in enumerate(["Run", "Walk"]):
        for g in range(1, 4):
            write_video(root / name / f"v_{name}_g{g:02d}_c01.mp4", 12, (80 * label + 40, 90, 120))
    dm = ActivityDataModule(video_root=str(root), num_frames=4, image_size=16, batch_size=8, val_fraction=0.0,
                            cache_dir=str(tmp_path / "cache"))
    task = activity_task(dm).eval()
    attach(task, dm)
    batch = next(iter(dm.train_dataloader()))
    assert batch.frames is None and batch.features.shape == (len(batch.ids), 4, 8)
    dataset = dm.datasets["train"]
    table_rows = [dataset.features[v] for v in range(len(dataset.videos))]
    for feats in batch.features:  # every clip's features are one cached frame of each quarter of one video
        assert any(np.allclose(feats.numpy(), rows[[a, b, c, d]], atol=1e-6)
                   for rows in table_rows for a in range(3) for b in range(3, 6) for c in range(6, 9) for d in range(9, 12))
    test = next(iter(dm.test_dataloader()))
    assert test.frames is None
    with torch.no_grad():
        frames = torch.stack([torch.as_tensor(dataset.cache.load(r.path)) for r in [dm.datasets["test"].videos[0][0]]])
        expected = task.encoder.encode_frames(
            ((frames[0][[0, 4, 7, 11]].permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
             / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)))
    torch.testing.assert_close(test.features[0], expected, rtol=2e-3, atol=2e-3)


def test_generated_clips_cached_and_motion_diff_refused():
    dm = ActivityDataModule(num_train_clips=10, num_val_clips=10, num_test_clips=10, num_frames=4, image_size=16,
                            batch_size=5)
    task = activity_task(dm).eval()
    attach(task, dm)
    val = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(val.features, task.encoder(val.frames).seq, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(task.compute_loss(val, "val")[0], task.compute_loss(val._replace(features=None), "val")[0],
                                   rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="motion=none"):
        attach(activity_task(dm, motion="diff"), dm)
