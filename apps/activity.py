"""Video activity classification (many-to-one): a CNN on every frame -> RNN over time -> one class per clip."""
from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from apps.core import ClassifierTask, Stage
from apps.media import log_video_table, save_gif, to_uint8
from datamodules.activity import ClipBatch
from datamodules.base import MEAN, STD
from datamodules.feature_cache import FeatureSource
from encoders.base import Encoded


def video_key(video_id: str) -> int:
    """A video id as a 63-bit integer that is the same in every process, so ranks can merge clips of one video."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "little") >> 1


class VideoAccuracy(Metric):
    """Accuracy after averaging the class probabilities of all clips that share a video id.

    Video ids are stored as process-independent hashes, so under DDP the clips of one video that landed on
    different ranks are still merged after the states are gathered."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("videos", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, video_ids: list[str]) -> None:
        """(B, C) logits, (B,) classes, B video ids."""
        self.probs.append(preds.softmax(-1))
        self.targets.append(target)
        self.videos.append(torch.tensor([video_key(v) for v in video_ids], dtype=torch.long, device=preds.device))

    def compute(self) -> Tensor:
        states = (self.probs, self.targets, self.videos)
        probs, targets, videos = (torch.cat(s) if isinstance(s, list) else s for s in states)  # lists until synced
        videos, index = videos.unique(return_inverse=True)  # hashes -> 0..V-1
        summed = probs.new_zeros(len(videos), probs.shape[1]).index_add_(0, index, probs)  # (V, C)
        truth = targets.new_zeros(len(videos)).scatter_(0, index, targets)
        return (summed.argmax(1) == truth).float().mean()


class ActivityTask(ClassifierTask):
    """Classify video clips: FrameEncoder (a CNN on every frame) -> RNNClassifier (or a no-time baseline); test also
    reports per-video accuracy (the class probabilities of all clips of a video averaged). Validation clips are
    drawn as GIFs with true and predicted labels (`num_logged_samples`); see ClassifierTask for the arguments."""

    real_inputs = "real footage"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        clip = getattr(self.decoder, "clip_features", 0)
        appearance = getattr(self.encoder, "appearance_dim", None)
        if clip and appearance is not None and clip != appearance:
            raise ValueError(f"decoder clip_features={clip}, but the encoder's appearance features are the first "
                             f"{appearance} of each step; set clip_features: {appearance} (or 0)")

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        return super().build_metrics(stage) | ({"video_acc": VideoAccuracy()} if stage == "test" else {})

    def forward(self, frames: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T, C, H, W) clips with (B,) valid lengths -> (B, num_classes) logits."""
        return self.decoder(self.encoder(frames, lengths))

    def export_spec(self, datamodule: Any) -> Any:
        """(B, T, 3, S, S) normalised frames, (B,) valid lengths -> (B, classes) logits."""
        from apps.export import ExportSpec

        T, S = datamodule.num_frames, datamodule.image_size

        def examples(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {"frames": torch.randn(batch, T, 3, S, S, generator=g),
                    "lengths": torch.tensor([T - (i % 2) * (T // 2) for i in range(batch)])}

        return ExportSpec(lambda m, frames, lengths: (m["decoder"](m["encoder"](frames, lengths)),),
                          {"encoder": self.encoder, "decoder": self.decoder}, ["logits"],
                          {"frames": {0: "batch"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
                          {"labels": self.class_names, "frames": f"T={T} RGB frames spread over the clip, short side "
                           f"resized to {S} and centre-cropped, scaled to [0, 1], minus mean, over std (per channel)",
                           "mean": MEAN.flatten().tolist(), "std": STD.flatten().tolist()}, examples)

    def feature_source(self) -> FeatureSource:
        if not hasattr(self.encoder, "from_frame_features"):
            raise ValueError(f"--model.cache_features true needs a FrameEncoder, not {type(self.encoder).__name__}")
        self.encoder.check_cacheable()
        # keyed by the image encoder and what is cached of it: options of the matching after the cache re-use it
        return FeatureSource(self.encoder.image_encoder, self.encoder.encode_frames, tag=self.encoder.cache_tag)

    def encode(self, batch: ClipBatch) -> Encoded:
        """The batch's cached per-frame features when it carries them, else the encoder run on its frames."""
        if batch.features is not None:
            return self.encoder.from_frame_features(batch.features, batch.lengths)
        return self.encoder(batch.frames, batch.lengths)

    def metric_inputs(self, batch: ClipBatch, logits: Tensor, stage: Stage) -> dict[str, Any]:
        return super().metric_inputs(batch, logits, stage) | {"video_ids": batch.ids}

    def media_samples(self, batch: ClipBatch, logits: Tensor, limit: int) -> list[tuple]:
        if batch.frames is None:
            return []
        probs, preds = logits.softmax(-1).max(-1)
        return [(to_uint8(frames[:length], MEAN, STD), int(label), int(pred), float(prob))
                for frames, length, label, prob, pred in zip(batch.frames[:limit], batch.lengths, batch.labels, probs, preds)]

    def log_media(self, stage: Stage, samples: list[tuple], values: dict[str, Tensor]) -> None:
        super().log_media(stage, samples, values)  # the confusion matrix
        if not samples:
            return
        folder, paths, rows = self.media_folder(), [], []
        for i, (frames, label, pred, prob) in enumerate(samples):
            paths.append(os.path.join(folder, f"val_step{self.global_step:06d}_clip{i}.gif"))
            save_gif(list(frames.repeat(2, axis=1).repeat(2, axis=2)), paths[-1], ms_per_frame=200)
            rows.append([self.class_names[label] if label >= 0 else "(unlabelled)", self.class_names[pred], round(prob, 3)])
        log_video_table(self.logger, "val/clips", paths, ["true", "predicted", "probability"], rows, self.global_step)
