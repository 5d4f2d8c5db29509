"""Video activity classification (many-to-one): a CNN on every frame -> RNN over time -> one class per clip."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from apps.core import SequenceTask, Stage
from apps.media import log_image, log_video_table, save_gif
from datamodules.activity import MEAN, STD, ClipBatch
from datamodules.feature_cache import FeatureSource, attach_feature_source
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

    def update(self, probs: Tensor, targets: Tensor, video_ids: list[str]) -> None:
        self.probs.append(probs)
        self.targets.append(targets)
        self.videos.append(torch.tensor([video_key(v) for v in video_ids], dtype=torch.long, device=probs.device))

    def compute(self) -> Tensor:
        states = (self.probs, self.targets, self.videos)
        probs, targets, videos = (torch.cat(s) if isinstance(s, list) else s for s in states)  # lists until synced
        videos, index = videos.unique(return_inverse=True)  # hashes -> 0..V-1
        summed = probs.new_zeros(len(videos), probs.shape[1]).index_add_(0, index, probs)  # (V, C)
        truth = targets.new_zeros(len(videos)).scatter_(0, index, targets)
        return (summed.argmax(1) == truth).float().mean()


def to_uint8(frames: Tensor) -> np.ndarray:
    """(T, 3, H, W) normalised frames -> (T, H, W, 3) uint8 pictures."""
    pixels = frames.detach().cpu() * STD + MEAN
    return (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def draw_confusion_matrix(matrix: np.ndarray, class_names: list[str], cell: int = 28) -> np.ndarray:
    """(C, C) counts (rows = true class) -> (H, W, 3) uint8 picture, rows normalised, counts in the cells."""
    C = len(class_names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    font = ImageFont.load_default()
    label_w = 8 + 6 * max(len(n) for n in class_names)
    img = Image.new("RGB", (label_w + C * cell + 4, label_w + C * cell + 4), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(class_names):
        draw.text((2, label_w + i * cell + cell // 2 - 5), name, fill="black", font=font)  # true class, rows
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((2, cell // 2 - 5), name, fill="black", font=font)
        img.paste(column.rotate(90, expand=True), (label_w + i * cell, 0))  # predicted class, columns
    for i in range(C):
        for j in range(C):
            shade = int(255 * (1 - rates[i, j]))
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x, y = label_w + j * cell, label_w + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            if matrix[i, j]:
                ink = "black" if shade > 110 else "white"
                draw.text((x + 3, y + cell // 2 - 5), str(int(matrix[i, j])), fill=ink, font=font)
    return np.asarray(img)


class ActivityTask(SequenceTask):
    """Classify video clips: FrameEncoder (a CNN on every frame) -> RNNClassifier (or a no-time baseline).

    Args:
        encoder: clip encoder, e.g. FrameEncoder around SmallCNNEncoder or ResNetEncoder.
        decoder: many-to-one head; `in_dim` and `num_classes` are filled in from the encoder and the data.
        class_names: class labels (from the datamodule; stored in checkpoints so predict needs nothing else).
        label_smoothing: cross-entropy label smoothing.
        top_k: how many labels `rnnsuite predict` writes per video (also the k of test/acc_top5).
        num_logged_clips: validation clips drawn as GIFs with true and predicted labels after each validation.
        freeze_encoder: keep the encoder's weights (and batch-norm statistics) fixed.
        encoder_lr: the encoder's own learning rate when fine-tuned (default: the task's `lr`).
        cache_features: with a frozen FrameEncoder, compute every frame's features once into a disk cache
            (datamodules/feature_cache.py) and train and evaluate the decoder on them: decoder speed.
        trained_on: what the model was trained on, set at fit from the datamodule (stored in the checkpoint);
            predict prints a note when it was generated data.
    """

    main_metric = "val/acc"
    main_metric_mode = "max"

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], nn.Module],
        class_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        top_k: int = 5,
        num_logged_clips: int = 4,
        freeze_encoder: bool = False,
        encoder_lr: float | None = None,
        cache_features: bool = False,
        trained_on: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not class_names:
            raise ValueError(
                "ActivityTask needs class names: run it through the CLI with a datamodule, or pass class_names="
            )
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        self.encoder = encoder
        self.decoder = decoder(encoder.out_dim, num_classes)
        self.label_smoothing, self.top_k = label_smoothing, min(top_k, num_classes)
        self.freeze_encoder, self.encoder_lr, self.cache_features = freeze_encoder, encoder_lr, cache_features
        self.trained_on = trained_on
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.metrics = nn.ModuleDict({
            "val": MetricCollection({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "confusion": MulticlassConfusionMatrix(num_classes),
            }),
            "test": MetricCollection({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
                "confusion": MulticlassConfusionMatrix(num_classes),
            }),
        })
        self.video_acc = VideoAccuracy()
        self.num_logged_clips = num_logged_clips
        self._clips: list[tuple[np.ndarray, int, int, float]] = []  # (T, H, W, 3) uint8, true, predicted, prob

    def forward(self, frames: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T, C, H, W) clips with (B,) valid lengths -> (B, num_classes) logits."""
        return self.decoder(self.encoder(frames, lengths))

    def setup(self, stage: str) -> None:
        if self.cache_features and stage != "predict" and self._trainer is not None:
            if not hasattr(self.encoder, "from_frame_features"):
                raise ValueError(f"--model.cache_features true needs a FrameEncoder, not {type(self.encoder).__name__}")
            self.encoder.check_cacheable()
            source = FeatureSource(self.encoder, self.encoder.encode_frames, tag="frames")
            attach_feature_source(self.trainer.datamodule, source, self.freeze_encoder)

    def on_fit_start(self) -> None:
        # what predict tells its user: a model of generated data knows nothing of real photographs or footage
        self.trained_on = self.hparams["trained_on"] = getattr(self.trainer.datamodule, "data_source", None)

    def on_predict_start(self) -> None:
        if self.trained_on and self.trained_on.startswith("generated"):
            print(f"note: this checkpoint was trained on {self.trained_on}, not on real footage; expect "
                  "nonsense on anything else (configs/*_pretrained.yaml trains on your own data)")

    def encode(self, batch: ClipBatch) -> Encoded:
        """The batch's cached per-frame features when it carries them, else the encoder run on its frames."""
        if batch.features is not None:
            return self.encoder.from_frame_features(batch.features, batch.lengths)
        return self.encoder(batch.frames, batch.lengths)

    def param_groups(self) -> list[dict]:
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": decoder}]
        if encoder:
            groups.append({"params": encoder, "lr": self.encoder_lr if self.encoder_lr is not None else self.lr})
        return groups

    def on_train_epoch_start(self) -> None:
        if self.freeze_encoder:
            self.encoder.eval()  # frozen also means frozen batch-norm statistics

    def compute_loss(self, batch: ClipBatch, stage: Stage) -> tuple[Tensor, Tensor]:
        logits = self.decoder(self.encode(batch))
        return F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing), logits

    def update_metrics(self, batch: ClipBatch, logits: Tensor, stage: Stage) -> None:
        self.metrics[stage].update(logits, batch.labels)
        if stage == "val" and len(self._clips) < self.num_logged_clips and batch.frames is not None:
            probs = logits.detach().softmax(-1).max(-1)
            for frames, length, label, prob, pred in zip(batch.frames, batch.lengths, batch.labels, *probs):
                if len(self._clips) < self.num_logged_clips:
                    self._clips.append((to_uint8(frames[:length]), int(label), int(pred), float(prob)))
        if stage == "test":
            self.video_acc.update(logits.softmax(-1), batch.labels, batch.video_ids)

    def compute_metrics(self, stage: Stage) -> dict[str, Tensor]:
        values = self.metrics[stage].compute()
        self._confusion = values.pop("confusion").cpu().numpy()
        self.metrics[stage].reset()
        if stage == "test":
            values["video_acc"] = self.video_acc.compute()
            self.video_acc.reset()
        return values

    def on_eval_epoch_end(self, stage: Stage) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            picture = draw_confusion_matrix(self._confusion, self.class_names)
            caption = "rows: true class, columns: predicted class"
            log_image(self.logger, f"{stage}/confusion_matrix", picture, self.global_step, caption=caption)
        if stage == "val" and self._clips and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            folder = os.path.join(self.trainer.default_root_dir, "media")
            os.makedirs(folder, exist_ok=True)
            paths, rows = [], []
            for i, (frames, label, pred, prob) in enumerate(self._clips):
                paths.append(os.path.join(folder, f"val_step{self.global_step:06d}_clip{i}.gif"))
                save_gif(list(frames.repeat(2, axis=1).repeat(2, axis=2)), paths[-1], ms_per_frame=200)
                rows.append([self.class_names[label] if label >= 0 else "(unlabelled)", self.class_names[pred], round(prob, 3)])
            log_video_table(self.logger, "val/clips", paths, ["true", "predicted", "probability"], rows, self.global_step)
        self._clips = []

    @torch.no_grad()
    def predict_step(self, batch: ClipBatch, batch_idx: int) -> dict[str, list[dict[str, float | str]]]:
        probs = self(batch.frames, batch.lengths).softmax(-1)
        top = probs.topk(self.top_k, dim=-1)
        return {
            video: [{"label": self.class_names[int(c)], "prob": round(float(p), 6)} for p, c in zip(ps, cs)]
            for video, ps, cs in zip(batch.video_ids, top.values, top.indices)
        }

    @staticmethod
    def write_predictions(outputs: list[dict[str, list[dict[str, float | str]]]], path: str) -> str:
        """Merge per-batch {video file: top-k [{label, prob}]} dicts into one JSON file; returns what was written."""
        merged = {video: top for batch in outputs for video, top in batch.items()}
        with open(path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
        return f"top-k labels for {len(merged)} videos"

    def batch_size_of(self, batch: ClipBatch) -> int:
        return len(batch.video_ids)
