import os

import av
import numpy as np
import pytest
import torch

import datamodules.readers.ucf101 as ucf101
from datamodules.synthetic import motion_clips
from datamodules.activity import ActivityDataModule, ClipBatch, ClipSample, clip_starts, collate_clips, train_clip
from datamodules.readers.ucf101 import FrameCache, VideoDecodeError, decode_video, read_split

CLASSES = ["ApplyEyeMakeup", "Basketball", "Biking"]


def write_video(path, num_frames, colour, size=(40, 30)):
    """A real H.264 mp4 whose frames show `colour` with a white bar 3 px wide at column 12 + 2t in frame t."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for t in range(num_frames):
            img = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
            x = (12 + 2 * t) % (size[0] - 3)
            img[:, x : x + 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def ucf(tmp_path):
    """A tiny UCF101 tree: 3 classes x 2 groups x 2 clips, one short clip, one corrupt file, one missing file."""
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    train, test = [], []
    for label, name in enumerate(CLASSES):
        for g in (1, 2):
            for c in (1, 2):
                rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.mp4"
                write_video(root / rel, 12, (60 * label + 30, 80, 120))
                (train if g == 1 else test).append(rel)
    write_video(root / "Biking/v_Biking_g03_c01.mp4", 3, (0, 0, 0))  # shorter than num_frames
    (root / "Biking/v_Biking_g04_c01.mp4").write_bytes(b"this is not a video")
    lines = [f"{rel} {CLASSES.index(rel.split('/')[0]) + 1}\n" for rel in train]
    lines += ["Biking/v_Biking_g03_c01.mp4 3\n", "Biking/v_Biking_g04_c01.mp4 3\n", "Biking/v_Biking_g09_c01.mp4 3\n"]
    (splits / "trainlist01.txt").write_text("".join(lines))
    (splits / "testlist01.txt").write_text("".join(f"{rel}\n" for rel in test))
    return root, splits


def datamodule(root, splits, tmp_path, **kwargs):
    args = dict(video_root=str(root), split_dir=str(splits), num_frames=8, image_size=16, batch_size=4,
                val_fraction=0.0, cache_dir=str(tmp_path / "cache"), on_bad_sample="skip")  # the fixture's bad files
    return ActivityDataModule(**{**args, **kwargs})


def test_decode_video_resizes_crops_and_keeps_time_order(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 20, (10, 200, 10), size=(48, 24))
    frames = decode_video(str(path), 16, max_frames=64)
    assert frames.shape == (20, 16, 16, 3) and frames.dtype == np.uint8
    assert frames[..., 1].mean() > 150  # green survives the round trip
    # the white bar moves right by two source columns per frame: its centre of mass grows over time
    bar_x = [(f.mean(2) > 150).nonzero()[1].mean() for f in frames[:10]]
    assert all(a < b for a, b in zip(bar_x, bar_x[1:]))
    assert decode_video(str(path), 16, max_frames=5).shape[0] == 5


def test_unreadable_file_raises_a_named_error(tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoDecodeError, match="bad.avi"):
        decode_video(str(bad), 16, 8)


def test_ucf_reader_labels_splits_and_skips(ucf, tmp_path):
    root, splits = ucf
    with pytest.warns(UserWarning) as record:
        dm = datamodule(root, splits, tmp_path)
        train = dm.dataset("train")
    messages = " ".join(str(w.message) for w in record)
    assert "trainlist01.txt:9 (Biking/v_Biking_g09_c01.mp4 is not under" in messages
    assert "train videos: skipped 2 of 8 samples" in messages
    assert "v_Biking_g04_c01.mp4 (unreadable video" in messages and "v_Biking_g03_c01.mp4 (video shorter" in messages
    assert len(dm.skipped["train"]) == 3
    assert dm.class_names == CLASSES
    assert len(train) == 6
    labels = sorted({(r.video_id.split("/")[0], r.label) for r, _ in train.videos})
    assert labels == [(c, i) for i, c in enumerate(CLASSES)]
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, ClipBatch)
    assert batch.frames.shape == (4, 8, 3, 16, 16) and batch.lengths.tolist() == [8] * 4
    test = dm.dataset("test")
    assert len(test) == 6 and all("_g02_" in test[i].video_id for i in range(len(test)))


def test_class_missing_from_class_index_is_a_clear_error(ucf, tmp_path):
    root, splits = ucf
    listed = (splits / "trainlist01.txt").read_text()
    (splits / "trainlist01.txt").write_text("Fencing/v_Fencing_g01_c01.mp4 4\n" + listed)
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: class 'Fencing'.*not in classInd.txt"):
        read_split(str(root), str(splits), 1)


def test_checkpoint_classes_must_match_the_data(ucf, tmp_path):
    root, splits = ucf
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="differ"):
            datamodule(root, splits, tmp_path, class_names=["a", "b", "c"])


def test_eval_clips_per_video_share_the_video_id(ucf, tmp_path):
    root, splits = ucf
    dm = datamodule(root, splits, tmp_path, clips_per_video=3)
    test = dm.dataset("test")
    assert len(test) == 6 * 3
    ids = [test[i].video_id for i in range(len(test))]
    assert all(ids.count(v) == 3 for v in ids)


def test_second_epoch_decodes_nothing(ucf, tmp_path, monkeypatch):
    root, splits = ucf
    calls = []
    real = ucf101.decode_video
    monkeypatch.setattr(ucf101, "decode_video", lambda path, *a: calls.append(path) or real(path, *a))
    with pytest.warns(UserWarning):
        dm = datamodule(root, splits, tmp_path)
        loader = dm.train_dataloader()
    first = len(calls)
    assert first == 8  # every listed file on disk, once (the corrupt one fails and is not cached)
    epoch1 = [b.frames for b in loader]
    epoch2 = [b.frames for b in loader]
    assert len(calls) == first and len(epoch1) == len(epoch2) == 2
    # a new datamodule (a new run) reuses the cache too; only the corrupt file is tried again
    with pytest.warns(UserWarning):
        datamodule(root, splits, tmp_path).train_dataloader()
    assert calls[first:] == [str(root / "Biking/v_Biking_g04_c01.mp4")]


def test_training_clips_have_the_time_scale_of_evaluation_clips():
    rng = np.random.default_rng(0)
    for count in (8, 9, 16, 33, 100):
        spread = clip_starts(count, 8, 1)[0]  # one evaluation clip spread over the video
        draws = [train_clip(count, 8, 1, rng) for _ in range(50)]
        for idx in draws:
            assert len(idx) == 8 and (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < count
            edges = np.arange(9) * count // 8  # one frame from each eighth of the video
            assert ((idx >= edges[:-1]) & (idx < edges[1:])).all()
        mean_step = np.mean([np.diff(i).mean() for i in draws])
        assert mean_step == pytest.approx(np.diff(spread).mean(), rel=0.25)  # not consecutive frames
        if count > 8:
            assert len({tuple(i) for i in draws}) > 1
    # several evaluation windows of consecutive frames: training takes one random such window
    for idx in (train_clip(20, 8, 3, rng) for _ in range(20)):
        assert (np.diff(idx) == 1).all() and 0 <= idx[0] <= 12


def test_train_samples_random_clips_and_eval_is_deterministic(ucf, tmp_path):
    root, splits = ucf
    cache = FrameCache(str(tmp_path / "c"), 16, 64)
    video = str(root / "Basketball/v_Basketball_g01_c01.mp4")
    assert cache.ensure(video) == 12
    with pytest.warns(UserWarning):
        dm = datamodule(root, splits, tmp_path)
    train, test = dm.dataset("train"), dm.dataset("test")
    np.random.seed(0)
    clips = {tuple(train[0].frames.flatten(1).sum(1).tolist()) for _ in range(20)}
    assert len(clips) > 1
    assert torch.equal(test[0].frames, test[0].frames)


def test_hmdb_and_plain_class_folder_layouts(tmp_path):
    root = tmp_path / "hmdb"
    for name in ("brush_hair", "cartwheel"):
        for i in range(3):
            write_video(root / name / f"{name}_{i}.mp4", 4, (100, 100, 100))
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    for name in ("brush_hair", "cartwheel"):
        (split_dir / f"{name}_test_split1.txt").write_text(f"{name}_0.mp4 1\n{name}_1.mp4 2\n{name}_2.mp4 0\n")
    names, splits, missing = read_split(str(root), str(split_dir), 1)
    assert names == ["brush_hair", "cartwheel"] and missing == {"train": [], "test": []}
    assert [r.video_id for r in splits["train"]] == ["brush_hair/brush_hair_0.mp4", "cartwheel/cartwheel_0.mp4"]
    assert [r.label for r in splits["test"]] == [0, 1]
    names, splits, _ = read_split(str(root), None)
    assert names == ["brush_hair", "cartwheel"] and len(splits["train"]) + len(splits["test"]) == 6


def test_collate_pads_variable_length_clips():
    samples = [ClipSample(torch.ones(n, 3, 4, 4), i, f"v{i}") for i, n in enumerate([3, 1, 2])]
    batch = collate_clips(samples)
    assert batch.frames.shape == (3, 3, 3, 4, 4) and batch.lengths.tolist() == [3, 1, 2]
    assert batch.frames[1, 1:].abs().sum() == 0 and batch.labels.tolist() == [0, 1, 2]


# --- the generated default data ----------------------------------------------------------------------------


def test_generated_clips_are_seeded_balanced_and_disjoint():
    a, la = motion_clips.generate_split("val", 20, 6, 24, seed=3)
    b, lb = motion_clips.generate_split("val", 20, 6, 24, seed=3)
    assert a.shape == (20, 6, 24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.bincount(la, minlength=10).tolist() == [2] * 10
    c, _ = motion_clips.generate_split("test", 20, 6, 24, seed=3)
    assert not np.array_equal(a, c)


def test_generated_split_is_cached_by_its_parameters(monkeypatch):
    first = motion_clips.load_split("val", 10, 4, 16, seed=5)
    monkeypatch.setattr(motion_clips, "generate_split", lambda *a: pytest.fail("regenerated a cached split"))
    again = motion_clips.load_split("val", 10, 4, 16, seed=5)
    assert np.array_equal(first[0], again[0])


def test_no_single_frame_tells_the_class_but_motion_does():
    """The middle frame's actor position, orientation and scale have one distribution for every class; the
    displacement between frames differs by class."""
    rng = np.random.default_rng(0)
    T, size, n = 12, 32, 400
    mid = (T - 1) // 2
    per_class = {}
    for label in range(len(motion_clips.CLASS_NAMES)):
        stats = np.array([
            np.concatenate([pos[mid] / size, [ang[mid] % 360 / 360, scale[mid]], (pos[-1] - pos[0]) / size])
            for pos, ang, scale in (motion_clips._trajectory(label, rng, T, size) for _ in range(n))
        ])
        per_class[label] = stats
    for label, stats in per_class.items():
        # uniform position and angle: mean 0.5, std 1/sqrt(12); scale uniform on SCALE_RANGE
        assert np.allclose(stats[:, :3].mean(0), 0.5, atol=0.05), motion_clips.CLASS_NAMES[label]
        assert np.allclose(stats[:, :3].std(0), 12 ** -0.5, atol=0.03), motion_clips.CLASS_NAMES[label]
        assert abs(stats[:, 3].mean() - np.mean(motion_clips.SCALE_RANGE)) < 0.02
    right, left = per_class[0], per_class[1]
    assert (right[:, 4] % 1 > 0.4).mean() > 0.95 and (left[:, 4] % 1 < 0.6).mean() > 0.95  # net displacement


def test_describing_the_datamodule_builds_no_split(tmp_path, monkeypatch):
    """jsonargparse formats the datamodule into messages on every CLI run; Lightning's __str__ built every
    dataloader, so `rnnsuite test` generated the whole training set."""
    monkeypatch.setenv("RNNSUITE_CACHE", str(tmp_path))
    dm = ActivityDataModule(num_train_clips=8, num_val_clips=4, num_test_clips=4, num_frames=4, image_size=16)
    assert "ActivityDataModule" in str(dm) and not dm.datasets and not list(tmp_path.rglob("*.npz"))
    dm.test_dataloader()
    assert [p.name.split("-")[1] for p in tmp_path.rglob("*.npz")] == ["test"] and "test" in str(dm)
