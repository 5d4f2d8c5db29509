"""The one LightningModule every task shares: step, metrics, media, logging as `stage/name`, optimizer and schedule.

A task subclass is its loss (`compute_loss`), its metrics (`build_metrics`) and their inputs (`metric_inputs`),
its media (`media_samples`, `log_media`) and its predictions (`predict_step`); everything else lives here once.
"""
from __future__ import annotations

import json
import math
import os
import random
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
import torch.nn.functional as F
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from apps.callbacks import CheckpointOnInterrupt
from apps.media import log_confusion_matrix
from datamodules.bad_samples import SkippedBatch
from datamodules.feature_cache import FeatureSource, attach_feature_source
from decoders.schedules import SamplingSchedule, sampling_probability
from encoders.base import Encoded, Encoder

Stage = Literal["train", "val", "test"]
EVAL_STAGES: tuple[Stage, ...] = ("val", "test")


class SequenceTask(pl.LightningModule):
    """Shared core of all rnnsuite tasks.

    Args:
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: adamw, adam or sgd (momentum 0.9, Nesterov).
        scheduler: none, cosine (to 0 after warm-up, over the planned steps) or plateau (halve on a stalled main metric).
        warmup_steps: linear warm-up from 0 to `lr` over this many optimizer steps.
        num_logged_samples: validation samples kept for the task's media (captions, clips, audio, strips) each epoch.
        init_from: a checkpoint of this task to start `fit` from: its weights only (no optimizer, schedule, step or
            epoch), e.g. a cross-entropy model for SCST fine-tuning. Architecture and vocabulary/labels must match
            (the CLI adopts the checkpoint's vocabulary/labels for the data). Unlike `--ckpt_path`, which resumes.
    """

    #: metric that picks the best checkpoint, and whether higher is better
    main_metric: ClassVar[str] = "val/loss"
    main_metric_mode: ClassVar[Literal["min", "max"]] = "min"
    #: datamodule attribute -> constructor argument, filled in by the CLI when both are built (vocabularies, labels)
    data_links: ClassVar[dict[str, str]] = {}

    def export_spec(self, datamodule: Any) -> Any:
        """This task's inference path for `python -m apps.export --format torchscript|onnx` (an apps.export.ExportSpec;
        `datamodule` says the input sizes)."""
        raise NotImplementedError(f"{type(self).__name__} has no TorchScript/ONNX export")

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        scheduler: Literal["none", "cosine", "plateau"] = "cosine",
        warmup_steps: int = 0,
        num_logged_samples: int = 4,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.init_from = init_from
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer_name, self.scheduler_name, self.warmup_steps = optimizer, scheduler, warmup_steps
        self.num_logged_samples = num_logged_samples
        self._skipped: dict[str, list[str]] = {}  # per stage: samples the collate left out this epoch
        self._media: list[Any] = []  # validation samples for `log_media`
        self.eval_loss = torch.nn.ModuleDict({s: MeanMetric() for s in EVAL_STAGES})  # states not in checkpoints
        self._metrics: torch.nn.ModuleDict | None = None

    @property
    def metrics(self) -> torch.nn.ModuleDict:
        """{stage: MetricCollection}, built on first use from `build_metrics` (after the subclass's __init__).
        Without compute groups: torchmetrics would merge metrics whose states happen to match after the first
        batch (top-1 and top-5 accuracy when all of it is right, beam and greedy PER when they agree) and from
        then on update only one of them."""
        if self._metrics is None:
            self._metrics = torch.nn.ModuleDict({
                s: MetricCollection(self.build_metrics(s), compute_groups=False) for s in EVAL_STAGES
            }).to(self.device)
        return self._metrics

    def require(self, value: Any, what: str, argument: str) -> Any:
        """A datamodule-linked constructor argument (vocabulary, class names), or the error saying where it comes from."""
        if not value:
            raise ValueError(f"{type(self).__name__} needs {what}: run it through the CLI with a datamodule, "
                             f"or pass {argument}=")
        return value

    def sampling_prob(self, schedule: SamplingSchedule, start: float, end: float, max_prob: float) -> float:
        """Scheduled sampling: the probability, at this point of training, of feeding the model its own previous
        output instead of the truth (decoders/schedules.py); logged as train/sampling_prob."""
        prob = sampling_probability(self.training_progress(), schedule, start, end, max_prob)
        self.log("train/sampling_prob", prob, on_step=True, on_epoch=False)
        return prob

    def setup(self, stage: str) -> None:
        # before Lightning restores a `--ckpt_path` (resuming wins over init_from) and before features are cached
        if stage == "fit" and self.init_from:
            self.load_weights(self.init_from)

    def load_weights(self, path: str) -> None:
        """Weights only from a checkpoint of this task (`init_from`); refuses another task, another vocabulary or
        label set, and another architecture, saying which."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--model.init_from {path} does not exist")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams = checkpoint.get("hyper_parameters", {})
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        if hparams.get("_class_path", mine) != mine:
            raise ValueError(f"--model.init_from {path} is a {hparams['_class_path']} checkpoint, not {mine}")
        for argument in self.data_links.values():
            if argument in hparams and argument in self.hparams and hparams[argument] != self.hparams[argument]:
                raise ValueError(f"--model.init_from {path} was trained with another {argument} than this model's; "
                                 f"fine-tune on data that gives the same {argument} (the CLI passes the checkpoint's)")
        own = self.state_dict()
        theirs = checkpoint["state_dict"]
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in theirs.items()
                 if k in own and v.shape != own[k].shape]
        missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        if wrong or missing or unexpected:
            raise ValueError(f"--model.init_from {path} holds another architecture than the config builds: "
                             + "; ".join(part for part in (
                                 f"shapes differ: {wrong[:4]}" if wrong else "", f"missing: {missing[:4]}" if missing else "",
                                 f"not in the model: {unexpected[:4]}" if unexpected else "") if part)
                             + "; give the model the checkpoint's encoder and decoder settings")
        self.load_state_dict(theirs)

    def media_folder(self) -> str:
        """<default_root_dir>/media, where validation GIFs and pictures are written before they are logged."""
        folder = os.path.join(self.trainer.default_root_dir, "media")
        os.makedirs(folder, exist_ok=True)
        return folder

    # --- what a task provides -------------------------------------------------------------------
    def compute_loss(self, batch: Any, stage: Stage) -> tuple[Tensor, Any]:
        """Return (scalar loss, outputs handed to `metric_inputs` and `media_samples`)."""
        raise NotImplementedError

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        """The metrics of one evaluation stage by name; the core updates, computes, logs (`stage/name`) and resets them."""
        return {}

    def metric_inputs(self, batch: Any, outputs: Any, stage: Stage) -> dict[str, Any]:
        """Keyword arguments for `metrics[stage].update`; each metric receives the ones its `update` names."""
        return {}

    def media_samples(self, batch: Any, outputs: Any, limit: int) -> list[Any]:
        """Up to `limit` samples of a validation batch to draw in `log_media`."""
        return []

    def log_media(self, stage: Stage, samples: list[Any], values: dict[str, Tensor]) -> None:
        """Rank 0, never while sanity checking: draw `samples` and non-scalar metric `values` (a confusion matrix)."""

    def write_predictions(self, outputs: list[dict[str, Any]], path: str) -> str:
        """`predict_step` returns {sample id: record} per batch: merged into one JSON file. Returns what was
        written where, for the CLI to print (a task may write elsewhere than `path`, e.g. a folder)."""
        merged = {name: record for batch in outputs for name, record in batch.items()}
        with open(path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
        return f"{len(merged)} predictions written to {path}"

    # --- the shared step ------------------------------------------------------------------------
    def shared_step(self, batch: Any, stage: Stage, batch_idx: int = 0) -> Tensor | None:
        # skip mode (--data.on_bad_sample skip): batches carry what their collate left out
        self._skipped.setdefault(stage, []).extend(getattr(batch, "skipped", ()))
        if isinstance(batch, SkippedBatch):  # every sample was bad
            if stage == "train" and self._trainer is not None and self.trainer.world_size > 1:
                # DDP: every rank must join the gradient all-reduce, so a zero loss through every parameter
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return None  # no step (Lightning skips a None training step)
        loss, outputs = self.compute_loss(batch, stage)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {stage} loss ({loss.item()}) at global step {self.global_step}, epoch {self.current_epoch}, "
                f"batch {batch_idx}{self.describe_batch(batch)}; lower --model.lr or set --trainer.gradient_clip_val "
                "(train/grad_norm in the logs shows the explosion that led here)"
            )
        batch_size = self.batch_size_of(batch)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
            if self._trainer is not None and self.trainer.optimizers:
                self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
            return loss
        # a Metric, not a tensor: its weighted sum and count are synced, so the epoch loss is right under DDP
        # even when ranks hold different numbers of samples (Lightning's sync_dist averages rank means)
        self.eval_loss[stage].update(loss.detach(), weight=batch_size)
        self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=True, batch_size=batch_size)
        self.metrics[stage].update(**self.metric_inputs(batch, outputs, stage))
        if stage == "val" and len(self._media) < self.num_logged_samples:
            self._media += self.media_samples(batch, outputs, self.num_logged_samples - len(self._media))
        return loss

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are NamedTuples of tensors plus metadata (ids, reference captions): move only the tensor fields.
        Lightning's default walks every string of the references, 5 % of a captioning CPU step
        (benchmarks/lightning_overhead.py)."""
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):
            return batch._replace(**{
                name: value.to(device, non_blocking=True)
                for name, value in zip(batch._fields, batch) if isinstance(value, Tensor)
            })
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    @staticmethod
    def batch_size_of(batch: Any) -> int:
        """Every batch carries its sample ids (`ids`)."""
        return len(batch.ids)

    @staticmethod
    def describe_batch(batch: Any) -> str:
        """Names of the samples in a batch for error messages, e.g. ' (samples: a.jpg, b.jpg)'."""
        names = list(getattr(batch, "ids", None) or ())
        if not names:
            return ""
        return " (samples: " + ", ".join(map(str, names[:8])) + (", ..." if len(names) > 8 else "") + ")"

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "test", batch_idx)

    def report_skipped(self, stage: Stage) -> None:
        """End of epoch in skip mode: `<stage>/skipped_samples` and one warning listing the bad samples left out
        (skipped while indexing, kept by the datamodule, plus those skipped while loading, carried by the batches)."""
        datamodule = self.trainer.datamodule  # None when fit was given bare dataloaders
        loaded = self._skipped.pop(stage, [])
        if getattr(datamodule, "on_bad_sample", "error") != "skip" or self.trainer.sanity_checking:
            return  # error mode skips nothing; what sanity checking skipped, the real validation meets again
        indexed = list(datamodule.skipped.get(stage, []))
        # load-time skips differ per process under DDP; index-time ones are the same everywhere
        count = len(indexed) + int(self.trainer.strategy.reduce(torch.tensor(float(len(loaded)), device=self.device),
                                                                reduce_op="sum"))
        self.log(f"{stage}/skipped_samples", float(count), batch_size=1)
        if count:
            names = indexed + loaded
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            # epoch and step in the text: Python shows a repeated warning only once
            rank_zero_warn(f"{stage}: skipped {count} bad samples in epoch {self.current_epoch} (step {self.global_step}): "
                           f"{shown}")

    def on_train_epoch_end(self) -> None:
        self.report_skipped("train")

    def compute_metrics(self, stage: Stage) -> dict[str, Tensor]:
        """The finished epoch's metrics (keys without the stage prefix); the collection is reset."""
        values = dict(self.metrics[stage].compute()) if self.metrics[stage] else {}
        self.metrics[stage].reset()
        return values

    def _eval_epoch_end(self, stage: Stage) -> None:
        self.report_skipped(stage)
        values = self.compute_metrics(stage)
        scalars = {f"{stage}/{k}": v for k, v in values.items() if not isinstance(v, Tensor) or v.numel() == 1}
        if scalars:
            self.log_dict(scalars, prog_bar=True, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.log_media(stage, self._media if stage == "val" else [], values)
        self._media = []

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # --- checkpoints: random-number state, so a resumed run draws what the uninterrupted one would -------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        # only tensors and plain values: the checkpoint stays loadable with weights_only=True
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "python": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, *rest = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))

    # --- optimisation ---------------------------------------------------------------------------
    def training_progress(self, after_warmup: int = 0) -> float:
        """Fraction of training done, in [0, 1]: by optimizer steps of the planned total, or, with
        --trainer.max_time, by the time budget when that is nearer its end."""
        if self._trainer is None:
            return 0.0
        total = max(1, int(self.trainer.estimated_stepping_batches) - after_warmup)
        progress = (self.trainer.global_step - after_warmup) / total
        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None:
            elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
            if remaining is not None and elapsed + remaining > 0:
                progress = max(progress, elapsed / (elapsed + remaining))
        return min(1.0, max(0.0, progress))

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; a task overrides this for per-module learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        params = self.param_groups()
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=self.main_metric_mode, factor=0.5, patience=2)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": self.main_metric}}
        warmup = self.warmup_steps
        cosine = self.scheduler_name == "cosine"

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * self.training_progress(after_warmup=warmup)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        """Under <default_root_dir>/checkpoints: the best epoch by this task's main metric, last.ckpt after every
        epoch (what `--ckpt_path last` resumes), and interrupted.ckpt on SIGTERM/Ctrl-C."""
        if self.trainer is None or not self.trainer.checkpoint_callbacks:
            return []
        dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
        best = ModelCheckpoint(
            dirpath=dirpath, filename="best-{epoch:03d}-{step}", monitor=self.main_metric, mode=self.main_metric_mode,
            auto_insert_metric_name=False,
        )
        # ModelCheckpoint(save_last=True) refreshes last.ckpt only when a best checkpoint is written; a second,
        # unmonitored one keeps the latest epoch.
        last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        return [CheckpointOnInterrupt(dirpath), best, last]


class EncoderTask(SequenceTask):
    """A task whose `self.encoder` may come pretrained: frozen or fine-tuned at its own learning rate, its output
    cached on disk when frozen, and the data it was trained on remembered for predict.

    Args:
        freeze_encoder: keep the encoder's weights (and batch-norm statistics) fixed.
        encoder_lr: the encoder's own learning rate when fine-tuned (default: the task's `lr`).
        cache_features: with a frozen encoder, compute its output once per image/frame into a disk cache
            (datamodules/feature_cache.py) and train and evaluate the decoder on that: decoder speed.
        trained_on: what the model was trained on, set at fit from the datamodule (stored in the checkpoint);
            predict prints a note when it was generated data.
    """

    #: what real inputs are called in predict's note on models of generated data
    real_inputs: ClassVar[str] = "real data"

    def __init__(self, encoder: Encoder, freeze_encoder: bool = False, encoder_lr: float | None = None,
                 cache_features: bool = False, trained_on: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder.requires_grad_(not freeze_encoder)
        self.freeze_encoder, self.encoder_lr, self.cache_features = freeze_encoder, encoder_lr, cache_features
        self.trained_on = trained_on

    def feature_source(self) -> FeatureSource:
        """What the feature cache stores for this task's encoder."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        super().setup(stage)  # init_from's weights first: the cached features are the encoder's
        if self.cache_features and stage != "predict" and self._trainer is not None:
            attach_feature_source(self.trainer.datamodule, self.feature_source(), self.freeze_encoder)

    def on_fit_start(self) -> None:
        # what predict tells its user: a model of generated data knows nothing of real photographs or footage
        self.trained_on = self.hparams["trained_on"] = getattr(self.trainer.datamodule, "data_source", None)

    def on_predict_start(self) -> None:
        if self.trained_on and self.trained_on.startswith("generated"):
            print(f"note: this checkpoint was trained on {self.trained_on}, not on {self.real_inputs}; expect "
                  "nonsense on anything else (configs/*_pretrained.yaml trains on your own data)")

    def param_groups(self) -> list[dict[str, Any]]:
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.")]}]
        if encoder:
            groups.append({"params": encoder, "lr": self.encoder_lr if self.encoder_lr is not None else self.lr})
        return groups

    def on_train_epoch_start(self) -> None:
        if self.freeze_encoder:
            self.encoder.eval()  # frozen also means frozen batch-norm statistics


class ClassifierTask(EncoderTask):
    """Many-to-one: an encoder, a head that turns its `Encoded` sequence into class logits (e.g. RNNClassifier),
    cross-entropy; accuracy, macro F1, a confusion matrix (and top-5 accuracy in test when there are more than five
    classes); predict writes each sample's top-k labels.
    A subclass says how a batch is encoded (`encode`); its batches carry `labels`.

    Args:
        encoder: any `Encoder` for the task's inputs.
        decoder: many-to-one head; `in_dim` and `num_classes` are filled in from the encoder and the data.
        class_names: class labels (from the datamodule; stored in checkpoints so predict needs nothing else).
        label_smoothing: cross-entropy label smoothing.
        top_k: how many labels `rnnsuite predict` writes per sample.
    """

    main_metric = "val/acc"
    main_metric_mode = "max"
    data_links = {"class_names": "class_names"}

    def __init__(self, encoder: Encoder, decoder: Callable[[int, int], torch.nn.Module], class_names: list[str] | None = None,
                 label_smoothing: float = 0.0, top_k: int = 5, **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)
        self.save_hyperparameters()
        self.class_names = list(self.require(class_names, "class names", "class_names"))
        self.decoder = decoder(encoder.out_dim, len(self.class_names))
        self.label_smoothing, self.top_k = label_smoothing, min(top_k, len(self.class_names))

    def encode(self, batch: Any) -> Encoded:
        raise NotImplementedError

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        C = len(self.class_names)
        metrics = {"acc": MulticlassAccuracy(C, average="micro"), "f1": MulticlassF1Score(C, average="macro"),
                   "confusion": MulticlassConfusionMatrix(C)}
        if stage == "test" and C > 5:  # with five classes or fewer, top-5 is always right
            metrics["acc_top5"] = MulticlassAccuracy(C, top_k=5, average="micro")
        return metrics

    def compute_loss(self, batch: Any, stage: Stage) -> tuple[Tensor, Tensor]:
        logits = self.decoder(self.encode(batch))  # (B, C)
        return F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing), logits.detach()

    def metric_inputs(self, batch: Any, logits: Tensor, stage: Stage) -> dict[str, Any]:
        return {"preds": logits, "target": batch.labels}

    def log_media(self, stage: Stage, samples: list[Any], values: dict[str, Tensor]) -> None:
        log_confusion_matrix(self.logger, f"{stage}/confusion_matrix", values["confusion"], self.class_names, self.global_step)

    @torch.no_grad()
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, list[dict[str, float | str]]]:
        """{sample id: its top-k [{label, prob}]}."""
        top = self.decoder(self.encode(batch)).softmax(-1).topk(self.top_k, dim=-1)
        return {
            sample: [{"label": self.class_names[int(c)], "prob": round(float(p), 6)} for p, c in zip(ps, cs)]
            for sample, ps, cs in zip(batch.ids, top.values, top.indices)
        }
