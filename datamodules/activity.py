"""Video activity data: generated motion clips by default, or UCF101/HMDB51-style video folders."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSamplePolicy, warn_skipped
from datamodules.base import SplitDataModule
from datamodules import motion_clips
from datamodules.ucf101 import VIDEO_EXTENSIONS, FrameCache, VideoRecord, index_videos, read_split, split_off_validation

# ImageNet statistics: what torchvision's pretrained ResNets expect; harmless for the small CNN.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class ClipSample(NamedTuple):
    frames: Tensor  # (T, 3, H, W) normalised
    label: int      # -1 when unknown (predict)
    video_id: str   # clips of one video share it (video-level accuracy)


class ClipBatch(NamedTuple):
    frames: Tensor        # (B, T, 3, H, W), zero after each clip's length
    lengths: Tensor       # (B,) valid frames
    labels: Tensor        # (B,) class ids, -1 when unknown
    video_ids: list[str]


def to_tensor(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float, normalised."""
    return (torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD


def collate_clips(samples: list[ClipSample]) -> ClipBatch:
    lengths = torch.tensor([s.frames.shape[0] for s in samples])
    T = int(lengths.max())
    frames = torch.zeros((len(samples), T, *samples[0].frames.shape[1:]))
    for i, s in enumerate(samples):
        frames[i, : s.frames.shape[0]] = s.frames
    return ClipBatch(frames, lengths, torch.tensor([s.label for s in samples]), [s.video_id for s in samples])


class MotionClipDataset(Dataset):
    """Generated clips held in memory as uint8 (N, T, H, W, 3)."""

    def __init__(self, split: str, frames: np.ndarray, labels: np.ndarray) -> None:
        self.split, self.frames, self.labels = split, frames, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> ClipSample:
        return ClipSample(to_tensor(self.frames[i]), int(self.labels[i]), f"{self.split}{i:06d}")


def clip_starts(num_cached: int, num_frames: int, clips_per_video: int) -> list[np.ndarray]:
    """Frame indices of each evaluation clip: one clip = T frames spread uniformly over the whole video;
    several = that many windows of T consecutive frames, evenly spaced."""
    if clips_per_video == 1:
        return [np.linspace(0, num_cached - 1, num_frames).round().astype(int)]
    starts = np.linspace(0, num_cached - num_frames, clips_per_video).round().astype(int)
    return [s + np.arange(num_frames) for s in starts]


class VideoClipDataset(Dataset):
    """Clips of real videos read through the frame cache.

    train: one random window of `num_frames` consecutive (cached) frames per video and epoch.
    eval:  `clips_per_video` fixed clips per video (see `clip_starts`).
    """

    def __init__(self, videos: list[tuple[VideoRecord, int]], cache: FrameCache, num_frames: int,
                 train: bool, clips_per_video: int = 1) -> None:
        self.cache, self.num_frames, self.train = cache, num_frames, train
        self.videos = videos
        self.items = [(record, None) for record, _ in videos] if train else [
            (record, idx) for record, count in videos for idx in clip_starts(count, num_frames, clips_per_video)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ClipSample:
        record, idx = self.items[i]
        frames = self.cache.load(record.path)
        if idx is None:
            start = np.random.randint(0, len(frames) - self.num_frames + 1)
            idx = np.arange(start, start + self.num_frames)
        return ClipSample(to_tensor(frames[idx]), record.label, record.video_id)


class VideoFolderDataset(Dataset):
    """Every video file in a folder, for `predict`: `num_frames` frames spread over each video (all of
    them when it is shorter)."""

    def __init__(self, folder: str, cache: FrameCache, num_frames: int) -> None:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--data.predict_dir {folder} is not a folder")
        self.paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS))
        if not self.paths:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in --data.predict_dir {folder}")
        self.cache, self.num_frames = cache, num_frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> ClipSample:
        frames = self.cache.load(self.paths[i])
        idx = np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int)
        return ClipSample(to_tensor(frames[idx]), -1, os.path.basename(self.paths[i]))


class ActivityDataModule(SplitDataModule):
    """Video activity classification data.

    Args:
        video_root: folder of `<ClassName>/<clip>.avi|mp4` videos (UCF101/HMDB51); unset = generated clips.
        split_dir: folder with UCF101's classInd.txt + trainlist0N/testlist0N.txt or HMDB51's
            <class>_test_splitN.txt; unset = class folders split by a hash of each clip's group.
        split: which official split (1, 2 or 3).
        predict_dir: folder of video files to classify with `rnnsuite predict`.
        num_frames: frames per clip (T).
        image_size: frames are resized (short side) and centre-cropped to image_size x image_size.
        batch_size: clips per batch.
        num_workers: DataLoader worker processes; also the processes that decode videos into the cache.
        clips_per_video: evaluation clips per real video; > 1 makes test/video_acc average them.
        max_cached_frames: frames kept per decoded video (spread uniformly over it).
        val_fraction: share of the training list's groups held out for validation (real videos).
        cache_dir: decoded-frame cache; default $RNNSUITE_CACHE/activity (~/.cache/rnnsuite/activity).
        num_train_clips: generated training clips.
        num_val_clips: generated validation clips.
        num_test_clips: generated test clips.
        num_distractors: jittering distractor objects per generated clip.
        seed: seed of the generated clips.
        class_names: use this class list (set from a checkpoint when evaluating it); must match the data's.
        on_bad_sample: error (stop, naming the file and line) or skip (leave out and count, reported every epoch)
            for a split-file line with an unknown class or a missing video, an unreadable video, or one shorter
            than num_frames.
    """

    def __init__(
        self,
        video_root: str | None = None,
        split_dir: str | None = None,
        split: int = 1,
        predict_dir: str | None = None,
        num_frames: int = 8,
        image_size: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        clips_per_video: int = 1,
        max_cached_frames: int = 64,
        val_fraction: float = 0.1,
        cache_dir: str | None = None,
        num_train_clips: int = 6000,
        num_val_clips: int = 500,
        num_test_clips: int = 1000,
        num_distractors: int = 2,
        seed: int = 0,
        class_names: list[str] | None = None,
        on_bad_sample: BadSamplePolicy = "error",
    ) -> None:
        super().__init__(on_bad_sample)
        if num_frames < 1 or clips_per_video < 1:
            raise ValueError("num_frames and clips_per_video must be >= 1")
        if max_cached_frames < num_frames:
            raise ValueError(f"max_cached_frames ({max_cached_frames}) must be >= num_frames ({num_frames})")
        self.video_root, self.split_dir, self.split, self.predict_dir = video_root, split_dir, split, predict_dir
        self.num_frames, self.image_size, self.batch_size, self.num_workers = num_frames, image_size, batch_size, num_workers
        self.clips_per_video, self.val_fraction = clips_per_video, val_fraction
        self.counts = {"train": num_train_clips, "val": num_val_clips, "test": num_test_clips}
        self.num_distractors, self.seed = num_distractors, seed
        self.cache = FrameCache(
            os.path.join(cache_dir or motion_clips.cache_root(), "frames"), image_size, max_cached_frames
        )
        self.datasets: dict[str, Dataset] = {}
        self.records: dict[str, list[VideoRecord]] = {}
        if video_root is not None:
            found, splits, skipped = read_split(video_root, split_dir, split, policy=self.on_bad_sample)
            for part, lines in skipped.items():  # lines of the training list count for train (val is cut from it)
                self.skipped[part] += lines
                warn_skipped(f"{part} split-file lines", lines)
            self.records["train"], self.records["val"] = split_off_validation(splits["train"], val_fraction)
            self.records["test"] = splits["test"]
        else:
            found = list(motion_clips.CLASS_NAMES)
        if class_names and video_root is not None and list(class_names) != found:
            raise ValueError(
                f"the checkpoint's {len(class_names)} classes differ from the {len(found)} classes of {split_dir or video_root}"
                f" (first differences: {[c for c in class_names if c not in found][:3]} vs "
                f"{[c for c in found if c not in class_names][:3]}); evaluate on the data the model was trained on"
            )
        # Known in __init__ so the CLI can hand `class_names` to the model before anything is decoded.
        self.class_names = list(class_names) if class_names else found

    def _dataset(self, split: str) -> Dataset:
        if split in self.datasets:
            return self.datasets[split]
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError("rnnsuite predict needs --data.predict_dir DIR (a folder of video files)")
            dataset: Dataset = VideoFolderDataset(self.predict_dir, self.cache, self.num_frames)
        elif self.video_root is not None:
            records = self.records[split]
            if not records:
                raise ValueError(f"the {split} split of {self.split_dir or self.video_root} has no videos")
            bad: list[str] = []
            kept = index_videos(records, self.cache, self.num_frames, self.num_workers, self.on_bad_sample, bad)
            warn_skipped(f"{split} videos", bad, len(records))
            self.skipped[split] += bad
            if not kept:
                raise ValueError(
                    f"every {split} video was skipped (unreadable or shorter than num_frames={self.num_frames}); "
                    "lower --data.num_frames or check the files"
                )
            dataset = VideoClipDataset(kept, self.cache, self.num_frames, split == "train", self.clips_per_video)
        else:
            if self.class_names != list(motion_clips.CLASS_NAMES):
                raise ValueError(
                    f"the model's classes ({', '.join(self.class_names[:3])}, ...) are not the generated clips' "
                    "classes; pass the --data.video_root the checkpoint was trained on"
                )
            frames, labels = motion_clips.load_split(
                split, self.counts[split], self.num_frames, self.image_size, self.seed, self.num_distractors
            )
            dataset = MotionClipDataset(split, frames, labels)
        self.datasets[split] = dataset
        return dataset

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=self.batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_clips,
        )
