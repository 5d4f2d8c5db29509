"""Video activity classification (many-to-one): a CNN on every frame -> RNN over time -> one class per clip."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from apps.core import EncoderTask, Stage
from apps.media import log_confusion_matrix, log_video_table, save_gif, to_uint8
from datamodules.activity import ClipBatch
from datamodules.base import MEAN, STD
from datamodules.feature_cache import FeatureSource
from encoders.base import Encoded, Encoder


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


class ActivityTask(EncoderTask):
    """Classify video clips: FrameEncoder (a CNN on every frame) -> RNNClassifier (or a no-time baseline).

    Args:
        encoder: clip encoder, e.g. FrameEncoder around SmallCNNEncoder or ResNetEncoder.
        decoder: many-to-one head; `in_dim` and `num_classes` are filled in from the encoder and the data.
        class_names: class labels (from the datamodule; stored in checkpoints so predict needs nothing else).
        label_smoothing: cross-entropy label smoothing.
        top_k: how many labels `rnnsuite predict` writes per video (also the k of test/acc_top5).
        num_logged_samples: validation clips drawn as GIFs with true and predicted labels after each validation.
    """

    main_metric = "val/acc"
    main_metric_mode = "max"
    data_links = {"class_names": "class_names"}
    real_inputs = "real footage"

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], nn.Module],
        class_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        top_k: int = 5,
        num_logged_samples: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, num_logged_samples=num_logged_samples, **kwargs)
        self.save_hyperparameters()
        if not class_names:
            raise ValueError(
                "ActivityTask needs class names: run it through the CLI with a datamodule, or pass class_names="
            )
        self.class_names = list(class_names)
        self.decoder = decoder(encoder.out_dim, len(self.class_names))
        self.label_smoothing, self.top_k = label_smoothing, min(top_k, len(self.class_names))

    def build_metrics(self, stage: Stage) -> MetricCollection:
        C = len(self.class_names)
        metrics = {"acc": MulticlassAccuracy(C, average="micro"), "confusion": MulticlassConfusionMatrix(C)}
        if stage == "test":  # top-5 and per-video (all clips of a video averaged) accuracy
            metrics |= {"acc_top5": MulticlassAccuracy(C, top_k=min(5, C), average="micro"), "video_acc": VideoAccuracy()}
        return MetricCollection(metrics)

    def forward(self, frames: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T, C, H, W) clips with (B,) valid lengths -> (B, num_classes) logits."""
        return self.decoder(self.encoder(frames, lengths))

    def feature_source(self) -> FeatureSource:
        if not hasattr(self.encoder, "from_frame_features"):
            raise ValueError(f"--model.cache_features true needs a FrameEncoder, not {type(self.encoder).__name__}")
        self.encoder.check_cacheable()
        return FeatureSource(self.encoder, self.encoder.encode_frames, tag="frames")

    def encode(self, batch: ClipBatch) -> Encoded:
        """The batch's cached per-frame features when it carries them, else the encoder run on its frames."""
        if batch.features is not None:
            return self.encoder.from_frame_features(batch.features, batch.lengths)
        return self.encoder(batch.frames, batch.lengths)

    def compute_loss(self, batch: ClipBatch, stage: Stage) -> tuple[Tensor, Tensor]:
        logits = self.decoder(self.encode(batch))
        return F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing), logits.detach()

    def metric_inputs(self, batch: ClipBatch, logits: Tensor, stage: Stage) -> dict[str, Any]:
        return {"preds": logits, "target": batch.labels, "video_ids": batch.ids}

    def media_samples(self, batch: ClipBatch, logits: Tensor, limit: int) -> list[tuple]:
        if batch.frames is None:
            return []
        probs, preds = logits.softmax(-1).max(-1)
        return [(to_uint8(frames[:length], MEAN, STD), int(label), int(pred), float(prob))
                for frames, length, label, prob, pred in zip(batch.frames[:limit], batch.lengths, batch.labels, probs, preds)]

    def log_media(self, stage: Stage, samples: list[tuple], values: dict[str, Tensor]) -> None:
        log_confusion_matrix(self.logger, f"{stage}/confusion_matrix", values["confusion"], self.class_names, self.global_step)
        if not samples:
            return
        folder = os.path.join(self.trainer.default_root_dir, "media")
        os.makedirs(folder, exist_ok=True)
        paths, rows = [], []
        for i, (frames, label, pred, prob) in enumerate(samples):
            paths.append(os.path.join(folder, f"val_step{self.global_step:06d}_clip{i}.gif"))
            save_gif(list(frames.repeat(2, axis=1).repeat(2, axis=2)), paths[-1], ms_per_frame=200)
            rows.append([self.class_names[label] if label >= 0 else "(unlabelled)", self.class_names[pred], round(prob, 3)])
        log_video_table(self.logger, "val/clips", paths, ["true", "predicted", "probability"], rows, self.global_step)

    @torch.no_grad()
    def predict_step(self, batch: ClipBatch, batch_idx: int) -> dict[str, list[dict[str, float | str]]]:
        """{video file: its top-k [{label, prob}]}."""
        top = self(batch.frames, batch.lengths).softmax(-1).topk(self.top_k, dim=-1)
        return {
            video: [{"label": self.class_names[int(c)], "prob": round(float(p), 6)} for p, c in zip(ps, cs)]
            for video, ps, cs in zip(batch.ids, top.values, top.indices)
        }
