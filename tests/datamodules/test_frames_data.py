import numpy as np
import pytest
import torch

from datamodules.frames import FramesDataModule
from datamodules.readers.frames import read_frames
from datamodules.readers.mnist import load_mnist
from datamodules.synthetic.moving_mnist import MovingMNIST, bouncing_positions


def test_val_and_test_sequences_are_fixed_distinct_and_from_mnist_test_digits():
    a, b = MovingMNIST("val", 4, seed=3), MovingMNIST("val", 4, seed=3)
    assert all(np.array_equal(a[i], b[i]) for i in range(4))
    assert not np.array_equal(a[0], MovingMNIST("test", 4, seed=3)[0])
    assert not np.array_equal(a[0], MovingMNIST("val", 4, seed=4)[0])
    assert a.digits is load_mnist("test")[0] and MovingMNIST("train", 1).digits is load_mnist("train")[0]
    clip = a[1]
    assert clip.shape == (20, 64, 64) and clip.dtype == np.uint8
    assert not np.array_equal(clip[0], clip[5])  # the digits move


def test_training_sequences_are_fresh_each_draw_but_seeded():
    train = MovingMNIST("train", 2)
    torch.manual_seed(0)
    first = train[0]
    assert not np.array_equal(first, train[0])
    torch.manual_seed(0)
    assert np.array_equal(first, train[0])


def test_bouncing_stays_on_the_canvas_and_moves_at_constant_speed_between_walls():
    pos = bouncing_positions(np.random.default_rng(0), 200, 36, step_length=0.1)
    assert pos.min() >= 0 and pos.max() <= 36
    steps = np.abs(np.diff(pos, axis=0))
    assert steps.max() <= 4  # 0.1 * 36 = 3.6 px per frame, per axis at most


def test_reads_the_moving_mnist_file_layout(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)  # (T, N, H, W)
    np.save(tmp_path / "mnist_test_seq.npy", raw)
    frames = read_frames(str(tmp_path / "mnist_test_seq.npy"))
    assert frames.shape == (3, 20, 64, 64, 1)
    assert np.array_equal(frames[2, 7, ..., 0], raw[7, 2])
    dm = FramesDataModule(test_npy=str(tmp_path / "mnist_test_seq.npy"), batch_size=2)
    batch = next(iter(dm.test_dataloader()))
    assert batch.frames.shape == (2, 20, 1, 64, 64) and batch.frames.dtype == torch.float32
    torch.testing.assert_close(batch.frames[1, 3, 0], torch.from_numpy(raw[3, 1]).float() / 255)
    assert batch.ids == ["mnist_test_seq.npy:0", "mnist_test_seq.npy:1"]


def test_reads_generic_npz_rgb_float_and_holds_out_validation(tmp_path):
    clips = np.random.default_rng(0).random((30, 12, 8, 8, 3), dtype=np.float32)
    np.savez(tmp_path / "clips.npz", frames=clips, labels=np.zeros(30))
    dm = FramesDataModule(train_npy=str(tmp_path / "clips.npz"), input_frames=4, output_frames=6, batch_size=4)
    assert dm.frame_channels == 3
    assert len(dm.arrays["train"]) == 27 and len(dm.arrays["val"]) == 3
    batch = next(iter(dm.val_dataloader()))
    assert batch.frames.shape == (3, 10, 3, 8, 8)  # cut to input + output frames
    torch.testing.assert_close(batch.frames[0, 2].permute(1, 2, 0), torch.from_numpy(clips[27, 2]))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 20, 8), np.uint8), "expected \\(T, N, H, W\\)"),
        (np.zeros((4, 20, 8, 8), np.int64), "dtype int64"),
        (np.zeros((4, 20, 8, 8, 2), np.uint8), "2 channels"),
    ],
)
def test_bad_arrays_get_clear_errors(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message):
        read_frames(str(path))


def test_too_short_sequences_and_missing_files_are_refused(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((5, 8, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="fewer than input_frames \\+ output_frames"):
        FramesDataModule(test_npy=str(tmp_path / "short.npy"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FramesDataModule(test_npy=str(tmp_path / "missing.npy"))


def test_predict_reads_sequences_of_only_the_observed_frames(tmp_path):
    seen = np.random.default_rng(0).integers(0, 256, (3, 4, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "seen.npy", seen)
    dm = FramesDataModule(predict_npy=str(tmp_path / "seen.npy"), input_frames=4, output_frames=3, batch_size=8)
    batch = next(iter(dm.predict_dataloader()))
    assert batch.frames.shape == (3, 4, 1, 8, 8) and batch.ids == ["seen.npy:0", "seen.npy:1", "seen.npy:2"]
    assert dm.source("predict") == str(tmp_path / "seen.npy")
    # the same file cannot be a test set (no future frames to score), and the error says where it fits
    with pytest.raises(ValueError, match="to forecast from observed frames only, pass it to `rnnsuite predict` as --data.predict_npy"):
        FramesDataModule(test_npy=str(tmp_path / "seen.npy"), input_frames=4, output_frames=3)


def test_a_time_first_file_of_observed_frames_is_recognised_by_the_model_length(tmp_path):
    """(10, N, H, W), the Moving MNIST layout cut to the 10 observed frames, under any name: time first, because
    10 is the model's input length; the same array sequence-first stays so."""
    seen = np.random.default_rng(0).integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)  # (T, N, H, W)
    np.save(tmp_path / "seen.npy", seen)
    frames = read_frames(str(tmp_path / "seen.npy"), lengths=(20, 10))
    assert frames.shape == (3, 10, 8, 8, 1) and np.array_equal(frames[2, 7, ..., 0], seen[7, 2])
    assert read_frames(str(tmp_path / "seen.npy")).shape == (10, 3, 8, 8, 1)  # without the model's length: as stored
    dm = FramesDataModule(predict_npy=str(tmp_path / "seen.npy"), input_frames=10, output_frames=10)
    assert dm.arrays["predict"].shape == (3, 10, 8, 8, 1)
    np.save(tmp_path / "seen.npy", seen.swapaxes(0, 1))  # (N, T, H, W) = (3, 10, 8, 8)
    assert FramesDataModule(predict_npy=str(tmp_path / "seen.npy")).arrays["predict"].shape == (3, 10, 8, 8, 1)


def test_the_models_channel_count_is_checked_against_every_file(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((2, 10, 8, 8, 3), np.uint8))
    assert FramesDataModule(predict_npy=str(tmp_path / "rgb.npy")).frame_channels == 3  # no model yet: the file's
    with pytest.raises(ValueError, match=r"rgb.npy: frames have 3 channels, but this model reads 1-channel frames"):
        FramesDataModule(predict_npy=str(tmp_path / "rgb.npy"), frame_channels=1)
