"""Real videos: the UCF101 / HMDB51 on-disk layouts, PyAV decoding and a decoded-frame disk cache.

Layouts (`video_root` holds `<ClassName>/<clip>.avi|mp4|...`):
  UCF101: `split_dir` has classInd.txt ("1 ApplyEyeMakeup"), trainlist0N.txt ("Class/clip.avi 1") and
          testlist0N.txt ("Class/clip.avi").
  HMDB51: `split_dir` has <class>_test_splitN.txt ("clip.avi 1"; 1 = train, 2 = test, 0 = unused).
  Neither (`split_dir` unset): the class folders are the classes; clips are split by a hash of their group.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass

import av
import numpy as np

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, MissingInputError, handle

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")


class VideoDecodeError(RuntimeError):
    """A video file that PyAV cannot read (corrupt, truncated, not a video, no frames)."""


@dataclass(frozen=True)
class VideoRecord:
    path: str      # absolute file path
    label: int     # index into the class list
    video_id: str  # path relative to the video root, e.g. "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"

    @property
    def group(self) -> str:
        """Clips cut from one long video share a group (UCF101's _gNN_); they must stay in one split."""
        stem = os.path.splitext(os.path.basename(self.video_id))[0]
        match = re.match(r"(.*_g\d+)_c\d+$", stem)
        return match.group(1) if match else stem


def _stable_fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def read_class_index(path: str) -> list[str]:
    """classInd.txt ("1 ApplyEyeMakeup" per line, 1-based) -> class names in index order."""
    names: dict[int, str] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise BadInputError(f"{path}:{n}: expected '<index> <ClassName>', got {line.strip()!r}")
            names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise BadInputError(f"{path}: class indices must be 1..N without gaps, got {sorted(names)[:5]}...")
    return [names[i] for i in range(1, len(names) + 1)]


def _ucf_list(path: str, video_root: str, classes: dict[str, int], policy: BadSamplePolicy, skipped: list[str]
              ) -> list[VideoRecord]:
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0]
            folder = rel.replace("\\", "/").split("/")[0]
            label = classes.get(folder)
            if label is None:
                error = BadSampleError(path, f"class {folder!r} of {rel} is not in classInd.txt",
                                       "add it there or remove the line", n)
            elif len(parts) > 1 and (not parts[1].isdigit() or int(parts[1]) - 1 != label):
                error = BadSampleError(path, f"label {parts[1]} of {rel} disagrees with classInd.txt ({label + 1} = {folder})",
                                       "fix the label or classInd.txt", n)
            elif not os.path.isfile(os.path.join(video_root, rel)):
                error = BadSampleError(path, f"{rel} is not under {video_root}",
                                       "check --data.video_root, or remove the line", n)
            else:
                records.append(VideoRecord(os.path.join(video_root, rel), label, rel))
                continue
            handle(policy, error, skipped)
    return records


def read_split(video_root: str, split_dir: str | None, split: int = 1, test_fraction: float = 0.3,
               policy: BadSamplePolicy = "error") -> tuple[list[str], dict[str, list[VideoRecord]], dict[str, list[str]]]:
    """-> (class names, {"train": records, "test": records}, {"train"/"test": lines skipped}).

    A bad line of a split file (unknown class, wrong label, malformed, video missing on disk) is an error naming
    the file and line, or with policy "skip" left out and described in the third result."""
    if not os.path.isdir(video_root):
        raise MissingInputError(f"--data.video_root {video_root} is not a folder")
    if split_dir is not None and os.path.isfile(os.path.join(split_dir, "classInd.txt")):
        class_names = read_class_index(os.path.join(split_dir, "classInd.txt"))
        classes = {c: i for i, c in enumerate(class_names)}
        splits, skipped = {}, {"train": [], "test": []}
        for part, prefix in (("train", "trainlist"), ("test", "testlist")):
            path = os.path.join(split_dir, f"{prefix}{split:02d}.txt")
            if not os.path.isfile(path):
                raise MissingInputError(f"{path} not found; --data.split {split} needs {prefix}{split:02d}.txt in {split_dir}")
            splits[part] = _ucf_list(path, video_root, classes, policy, skipped[part])
        return class_names, splits, skipped
    if split_dir is not None:
        files = sorted(glob.glob(os.path.join(split_dir, f"*_test_split{split}.txt")))
        if not files:
            raise MissingInputError(
                f"{split_dir} has neither classInd.txt (UCF101) nor *_test_split{split}.txt (HMDB51) files"
            )
        class_names = [os.path.basename(f)[: -len(f"_test_split{split}.txt")] for f in files]
        splits, skipped = {"train": [], "test": []}, {"train": [], "test": []}
        for label, (name, path) in enumerate(zip(class_names, files)):
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts or (len(parts) == 2 and parts[1] == "0"):
                        continue
                    if len(parts) != 2 or parts[1] not in ("1", "2"):
                        handle(policy, BadSampleError(path, f"expected '<clip> <0|1|2>', got {line.strip()!r}",
                                                      "fix or remove the line", n), skipped["train"])
                        continue
                    part, rel = "train" if parts[1] == "1" else "test", f"{name}/{parts[0]}"
                    full = os.path.join(video_root, rel)
                    if os.path.isfile(full):
                        splits[part].append(VideoRecord(full, label, rel))
                    else:
                        handle(policy, BadSampleError(path, f"{rel} is not under {video_root}",
                                                      "check --data.video_root, or remove the line", n), skipped[part])
        return class_names, splits, skipped
    class_names = sorted(d for d in os.listdir(video_root) if os.path.isdir(os.path.join(video_root, d)))
    if not class_names:
        raise MissingInputError(f"--data.video_root {video_root} has no class folders (<root>/<ClassName>/<clip>.avi)")
    splits = {"train": [], "test": []}
    for label, name in enumerate(class_names):
        for file in sorted(os.listdir(os.path.join(video_root, name))):
            if file.lower().endswith(VIDEO_EXTENSIONS):
                record = VideoRecord(os.path.join(video_root, name, file), label, f"{name}/{file}")
                splits["test" if _stable_fraction(record.group) < test_fraction else "train"].append(record)
    return class_names, splits, {"train": [], "test": []}


def split_off_validation(records: list[VideoRecord], val_fraction: float) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Hold out whole groups of the training list for validation -> (train, val)."""
    is_val = [_stable_fraction(r.group + "/val") < val_fraction for r in records]
    return [r for r, v in zip(records, is_val) if not v], [r for r, v in zip(records, is_val) if v]


def decode_video(path: str, size: int, max_frames: int) -> np.ndarray:
    """Decode with PyAV -> (N, size, size, 3) uint8 RGB: short side scaled to `size`, centre-cropped;
    at most `max_frames` frames, spread uniformly over the video when it has more."""
    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                scale = size / min(frame.width, frame.height)
                w, h = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
                rgb = frame.to_ndarray(width=w, height=h, format="rgb24")  # swscale does the resize
                top, left = (h - size) // 2, (w - size) // 2
                frames.append(rgb[top: top + size, left: left + size])
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"cannot decode {path}: {err}") from err
    if not frames:
        raise VideoDecodeError(f"{path} decoded to zero frames")
    if len(frames) > max_frames:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    return np.stack(frames)


class FrameCache:
    """Decoded, resized frames of each video as one .npy file, so every video is decoded once, not every epoch.

    Keyed by the file's path, size and modification time and by the decoding parameters; written atomically.
    """

    def __init__(self, root: str, size: int, max_frames: int) -> None:
        self.root, self.size, self.max_frames = root, size, max_frames

    def path_for(self, video: str) -> str:
        st = os.stat(video)
        key = f"{os.path.abspath(video)}|{st.st_size}|{st.st_mtime_ns}|{self.size}|{self.max_frames}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return os.path.join(self.root, digest[:2], f"{digest}.npy")

    def ensure(self, video: str) -> int:
        """Decode `video` into the cache unless it is there -> its number of cached frames."""
        path = self.path_for(video)
        if os.path.exists(path):
            return int(np.load(path, mmap_mode="r").shape[0])
        frames = decode_video(video, self.size, self.max_frames)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, frames)
        os.replace(tmp, path)
        return len(frames)

    def load(self, video: str) -> np.ndarray:
        """(N, size, size, 3) uint8 frames, decoding only on a cache miss."""
        path = self.path_for(video)
        if not os.path.exists(path):
            self.ensure(video)
        return np.load(path, mmap_mode="r")


def _ensure_one(args: tuple[FrameCache, str]) -> int | str:
    cache, path = args
    try:
        return cache.ensure(path)
    except VideoDecodeError as err:
        return str(err)


def index_videos(records: list[VideoRecord], cache: FrameCache, min_frames: int, workers: int = 0,
                 policy: BadSamplePolicy = "error", skipped: list[str] | None = None) -> list[tuple[VideoRecord, int]]:
    """Decode every video into the cache (in `workers` processes) -> [(record, frame count)].

    An unreadable video, or one with fewer than `min_frames` frames, is an error naming it, or with policy
    "skip" left out and described in `skipped`."""
    jobs = [(cache, r.path) for r in records]
    if workers > 0 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_ensure_one, jobs, chunksize=4))
    else:
        results = [_ensure_one(job) for job in jobs]
    kept, skipped = [], skipped if skipped is not None else []
    for record, result in zip(records, results):
        if isinstance(result, str):
            reason = result.replace(record.path, os.path.basename(record.path))  # PyAV names the path too
            handle(policy, BadSampleError(record.path, f"unreadable video ({reason})",
                                          "re-encode or remove the file and its split-file line"), skipped)
        elif result < min_frames:
            handle(policy, BadSampleError(record.path, f"video shorter than the clip ({result} < {min_frames} frames)",
                                          "lower --data.num_frames or remove the video"), skipped)
        else:
            kept.append((record, result))
    return kept
