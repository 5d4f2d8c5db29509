"""Video activity data: generated motion clips by default, or UCF101/HMDB51-style video folders."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.augment import train_augmentation
from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, warn_skipped
from datamodules.feature_cache import FeatureTable, array_key, load_or_build
from datamodules.base import MEAN, STD, SplitDataModule, cache_root, read_predict_files
from datamodules.synthetic import motion_clips
from datamodules.readers.ucf101 import (
    VIDEO_EXTENSIONS, FrameCache, VideoDecodeError, VideoRecord, index_videos, read_split, split_off_validation,
)

# ImageNet statistics: what torchvision's pretrained ResNets expect; harmless for the small CNN.


class ClipSample(NamedTuple):
    frames: Tensor | None           # (T, 3, H, W) normalised; None when cached features stand in for them
    label: int                      # -1 when unknown (predict)
    video_id: str                   # clips of one video share it (video-level accuracy)
    features: Tensor | None = None  # (T, D) cached per-frame features


class ClipBatch(NamedTuple):
    frames: Tensor | None           # (B, T, 3, H, W), zero after each clip's length; None in cached training batches
    lengths: Tensor                 # (B,) valid frames
    labels: Tensor                  # (B,) class ids, -1 when unknown
    ids: list[str]
    features: Tensor | None = None  # (B, T, D) cached per-frame features of a frozen encoder, zero after lengths


Augment = Callable[[Tensor], Tensor]  # (T, 3, H, W) uint8 -> same, one set of parameters per clip
TRANSFORM_KEY = "activity|short-side-centre-crop|imagenet-normalised"  # the frames cached features see


def to_tensor(frames: np.ndarray, augment: Augment | None = None) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float, normalised; `augment` (on uint8) first."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if augment is not None:
        pixels = augment(pixels)
    return (pixels.float() / 255.0 - MEAN) / STD


def _pad(rows: list[Tensor], T: int) -> Tensor:
    """(t_i, ...) tensors -> (B, T, ...), zero after each one's length."""
    out = torch.zeros((len(rows), T, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def collate_clips(samples: list[ClipSample]) -> ClipBatch:
    first = samples[0].frames if samples[0].frames is not None else samples[0].features
    lengths = torch.tensor([len(s.frames if s.frames is not None else s.features) for s in samples])
    T = int(lengths.max()) if len(first) else 0
    frames = _pad([s.frames for s in samples], T) if samples[0].frames is not None else None
    features = _pad([s.features for s in samples], T) if samples[0].features is not None else None
    return ClipBatch(frames, lengths, torch.tensor([s.label for s in samples]), [s.video_id for s in samples], features)


class MotionClipDataset(Dataset):
    """Generated clips held in memory as uint8 (N, T, H, W, 3)."""

    def __init__(self, split: str, frames: np.ndarray, labels: np.ndarray, augment: Augment | None = None) -> None:
        self.split, self.frames, self.labels, self.augment = split, frames, labels, augment
        self.features: FeatureTable | None = None  # set with cached features
        self.with_pixels = True

    def __len__(self) -> int:
        return len(self.labels)

    def feature_items(self) -> tuple[list[str], list[int], Callable[[int], Tensor]]:
        """(item keys, frames per item, item -> its frames) for the feature cache."""
        split = array_key(self.frames)
        return [f"{split}|{i}" for i in range(len(self))], [self.frames.shape[1]] * len(self), lambda i: to_tensor(self.frames[i])

    def __getitem__(self, i: int) -> ClipSample:
        features = None if self.features is None else torch.from_numpy(self.features[i].astype(np.float32))
        frames = to_tensor(self.frames[i], self.augment) if self.with_pixels or features is None else None
        return ClipSample(frames, int(self.labels[i]), f"{self.split}{i:06d}", features)


def clip_starts(num_cached: int, num_frames: int, clips_per_video: int) -> list[np.ndarray]:
    """Frame indices of each evaluation clip: one clip = T frames spread uniformly over the whole video;
    several = that many windows of T consecutive frames, evenly spaced."""
    if clips_per_video == 1:
        return [np.linspace(0, num_cached - 1, num_frames).round().astype(int)]
    starts = np.linspace(0, num_cached - num_frames, clips_per_video).round().astype(int)
    return [s + np.arange(num_frames) for s in starts]


def train_clip(num_cached: int, num_frames: int, clips_per_video: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of a training clip, at the time scale of the evaluation clips (`clip_starts`), so motion
    moves as fast in training as in evaluation: with one evaluation clip spread over the video, one random
    frame from each of T equal segments of it (TSN's segment sampling); with several windows of T consecutive
    frames, one random such window."""
    if clips_per_video == 1:
        edges = np.arange(num_frames + 1) * num_cached // num_frames  # T non-empty segments (num_cached >= T)
        return rng.integers(edges[:-1], edges[1:])  # one frame of each, in order
    start = rng.integers(0, num_cached - num_frames + 1)
    return np.arange(start, start + num_frames)


class VideoClipDataset(Dataset):
    """Clips of real videos read through the frame cache.

    train: one random clip per video and epoch, sampled as `train_clip` says (the time scale of evaluation).
    eval:  `clips_per_video` fixed clips per video (see `clip_starts`).
    """

    def __init__(self, videos: list[tuple[VideoRecord, int]], cache: FrameCache, num_frames: int,
                 train: bool, clips_per_video: int = 1, augment: Augment | None = None) -> None:
        self.cache, self.num_frames, self.train, self.augment = cache, num_frames, train, augment
        self.videos, self.clips_per_video = videos, clips_per_video
        # (video index, cached frame count, frame indices or None for a random training window)
        self.items = [(v, count, None) for v, (_, count) in enumerate(videos)] if train else [
            (v, count, idx) for v, (_, count) in enumerate(videos) for idx in clip_starts(count, num_frames, clips_per_video)
        ]
        self.features: FeatureTable | None = None  # per video, one row per cached frame (set with cached features)
        self.with_pixels = True

    def __len__(self) -> int:
        return len(self.items)

    def feature_items(self) -> tuple[list[str], list[int], Callable[[int], Tensor]]:
        """(item keys, frames per item, item -> its frames) for the feature cache: every cached frame of a video."""
        keys = [self.cache.path_for(record.path) for record, _ in self.videos]  # keyed by file and decoding
        return keys, [count for _, count in self.videos], lambda v: to_tensor(self.cache.load(self.videos[v][0].path))

    def __getitem__(self, i: int) -> ClipSample:
        v, count, idx = self.items[i]
        record = self.videos[v][0]
        if idx is None:
            idx = train_clip(count, self.num_frames, self.clips_per_video, np.random.default_rng(np.random.randint(2**31)))
        features = None if self.features is None else torch.from_numpy(self.features[v][idx].astype(np.float32))
        frames = None
        if self.with_pixels or features is None:
            frames = to_tensor(self.cache.load(record.path)[idx], self.augment)
        return ClipSample(frames, record.label, record.video_id, features)


class VideoFolderDataset(Dataset):
    """Every video file in a folder, for `predict`: `num_frames` frames spread over each video (all of
    them when it is shorter)."""

    def __init__(self, paths: list[str], cache: FrameCache, num_frames: int) -> None:
        self.paths, self.cache, self.num_frames = paths, cache, num_frames

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
        augment: training clips get a random resized crop and brightness/contrast/saturation jitter, the same
            for every frame of a clip (one set of parameters per clip), for small real sets. Excludes cached
            features (`--model.cache_features`).
        crop_scale: area fraction range of the random crop.
        color_jitter: brightness/contrast/saturation change, +- this fraction.
        horizontal_flip: also mirror training clips half of the time; opt-in, because a mirror image turns a
            movement or pan to the left into one to the right: wrong for classes defined by direction.
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
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        color_jitter: float = 0.3,
        horizontal_flip: bool = False,
    ) -> None:
        super().__init__(on_bad_sample)
        self.augment = train_augmentation(image_size, crop_scale, color_jitter, horizontal_flip) if augment else None
        if num_frames < 1 or clips_per_video < 1:
            raise BadInputError("num_frames and clips_per_video must be >= 1")
        if max_cached_frames < num_frames:
            raise BadInputError(f"max_cached_frames ({max_cached_frames}) must be >= num_frames ({num_frames})")
        self.video_root, self.split_dir, self.split, self.predict_dir = video_root, split_dir, split, predict_dir
        self.num_frames, self.image_size, self.batch_size, self.num_workers = num_frames, image_size, batch_size, num_workers
        self.clips_per_video, self.val_fraction = clips_per_video, val_fraction
        self.counts = {"train": num_train_clips, "val": num_val_clips, "test": num_test_clips}
        self.num_distractors, self.seed = num_distractors, seed
        self.cache = FrameCache(
            os.path.join(cache_dir or cache_root("activity"), "frames"), image_size, max_cached_frames
        )
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
            raise BadInputError(
                f"the checkpoint's {len(class_names)} classes differ from the {len(found)} classes of {split_dir or video_root}"
                f" (first differences: {[c for c in class_names if c not in found][:3]} vs "
                f"{[c for c in found if c not in class_names][:3]}); evaluate on the data the model was trained on"
            )
        # Known in __init__ so the CLI can hand `class_names` to the model before anything is decoded.
        self.class_names = list(class_names) if class_names else found

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict":
            paths = read_predict_files(self.predict_dir, self.predict_paths(VIDEO_EXTENSIONS, "video files"),
                                       self._decode_for_predict, "video files", self.on_bad_sample, self.skipped["predict"])
            return VideoFolderDataset(paths, self.cache, self.num_frames)
        if self.video_root is not None:
            records = self.records[split]
            if not records:
                raise BadInputError(f"the {split} split of {self.split_dir or self.video_root} has no videos")
            bad: list[str] = []
            kept = index_videos(records, self.cache, self.num_frames, self.num_workers, self.on_bad_sample, bad)
            warn_skipped(f"{split} videos", bad, len(records))
            self.skipped[split] += bad
            if not kept:
                raise BadInputError(
                    f"every {split} video was skipped (unreadable or shorter than num_frames={self.num_frames}); "
                    "lower --data.num_frames or check the files"
                )
            return VideoClipDataset(kept, self.cache, self.num_frames, split == "train", self.clips_per_video,
                                    self.augment if split == "train" else None)
        if self.class_names != list(motion_clips.CLASS_NAMES):
            raise BadInputError(
                f"the model's classes ({', '.join(self.class_names[:3])}, ...) are not the generated clips' "
                "classes; pass the --data.video_root the checkpoint was trained on"
            )
        frames, labels = motion_clips.load_split(
            split, self.counts[split], self.num_frames, self.image_size, self.seed, self.num_distractors
        )
        return MotionClipDataset(split, frames, labels, self.augment if split == "train" else None)

    def _decode_for_predict(self, path: str) -> None:
        """Decode a predict video into the frame cache (what `VideoFolderDataset` then reads), or a BadSampleError."""
        try:
            self.cache.ensure(path)
        except VideoDecodeError as err:
            raise BadSampleError(path, f"unreadable video ({err})", "re-encode or remove the file") from err

    def attach_features(self, split: str, dataset: VideoClipDataset | MotionClipDataset) -> None:
        """Per-frame features computed once for every cached frame; clips pick their frames' rows."""
        keys, counts, load = dataset.feature_items()
        transform = f"{TRANSFORM_KEY}|{self.image_size}|{self.cache.max_frames}"
        dataset.features = load_or_build(f"activity-{split}", keys, counts, transform, self.feature_source, load,
                                         self.num_workers)
        dataset.with_pixels = split == "val"  # the logged validation clips show the frames

    @property
    def data_source(self) -> str:
        """What a model fitted on this data was trained on (stored in its checkpoint, told by predict)."""
        return "generated motion clips of MNIST digits" if self.video_root is None else f"videos of {self.video_root}"

    def collate(self, split: str) -> Callable:
        return collate_clips
