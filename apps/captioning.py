"""Image captioning (one-to-many): CNN encoder -> RNN caption decoder, BLEU against all references."""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from apps.core import SequenceTask, Stage
from apps.media import log_image_table
from datamodules.captioning import MEAN, STD, CaptionBatch
from datamodules.vocab import Vocabulary
from decoders.caption import CaptionDecoder
from encoders.base import Encoder


class CaptioningTask(SequenceTask):
    """Caption images: teacher-forced cross-entropy in training, greedy generation for BLEU-1..4.

    Args:
        encoder: image encoder (any `Encoder`), e.g. SmallCNNEncoder or ResNetEncoder.
        decoder: caption decoder; `in_dim` and `vocab_size` are filled in from the encoder and vocabulary.
        vocab: token list (from the datamodule; stored in checkpoints so predict needs nothing else).
        max_caption_len: longest caption generated, in words.
        label_smoothing: cross-entropy label smoothing.
        num_logged_samples: validation images logged with their captions each epoch.
    """

    main_metric = "val/bleu4"
    main_metric_mode = "max"

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], CaptionDecoder],
        vocab: list[str] | None = None,
        max_caption_len: int = 20,
        label_smoothing: float = 0.0,
        num_logged_samples: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not vocab:
            raise ValueError("CaptioningTask needs a vocabulary: run it through the CLI with a datamodule, or pass vocab=")
        self.vocab = Vocabulary(vocab)
        self.encoder = encoder
        self.decoder = decoder(encoder.out_dim, len(self.vocab))
        self.max_caption_len, self.label_smoothing = max_caption_len, label_smoothing
        self.num_logged_samples = num_logged_samples
        self.metrics = nn.ModuleDict(
            {stage: MetricCollection({f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}) for stage in ("val", "test")}
        )
        self._samples: list[tuple[np.ndarray, str, str]] = []

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, max_caption_len) generated token ids (<pad> after <eos>)."""
        encoded = self.encoder(images)
        return self.decoder.generate(encoded, self.vocab.bos_id, self.vocab.eos_id, self.max_caption_len).tokens

    def caption(self, images: Tensor) -> list[str]:
        return [" ".join(self.vocab.decode(row.tolist())) for row in self(images)]

    def compute_loss(self, batch: CaptionBatch, stage: Stage) -> tuple[Tensor, None]:
        # Teacher forcing: the input is the target shifted right by one (<bos> w1 .. wn -> w1 .. wn <eos>).
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]
        logits = self.decoder(self.encoder(batch.images), inputs)  # (B, L, V)
        loss = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=self.vocab.pad_id, label_smoothing=self.label_smoothing
        )
        return loss, None

    def update_metrics(self, batch: CaptionBatch, outputs: None, stage: Stage) -> None:
        predictions = self.caption(batch.images)
        references = [[" ".join(ref) for ref in refs] for refs in batch.references]
        self.metrics[stage].update(predictions, references)
        if stage == "val" and len(self._samples) < self.num_logged_samples:
            pictures = ((batch.images * STD.to(self.device) + MEAN.to(self.device)).clamp(0, 1) * 255).byte()
            for img, pred, refs in zip(pictures, predictions, references):
                if len(self._samples) < self.num_logged_samples:
                    self._samples.append((img.permute(1, 2, 0).cpu().numpy(), pred, " / ".join(refs)))

    def compute_metrics(self, stage: Stage) -> dict[str, Tensor]:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        return values

    def on_eval_epoch_end(self, stage: Stage) -> None:
        if stage == "val" and self._samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            images, preds, refs = zip(*self._samples)
            rows = [[p, r] for p, r in zip(preds, refs)]
            log_image_table(self.logger, "val/samples", list(images), ["prediction", "references"], rows, self.global_step)
        self._samples = []

    def predict_step(self, batch: CaptionBatch, batch_idx: int) -> dict[str, str]:
        return dict(zip(batch.image_ids, self.caption(batch.images)))

    @staticmethod
    def write_predictions(outputs: list[dict[str, str]], path: str) -> str:
        """Merge per-batch {filename: caption} dicts into one JSON file; returns what was written."""
        merged = {name: caption for batch in outputs for name, caption in batch.items()}
        with open(path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
        return f"{len(merged)} captions"

    def batch_size_of(self, batch: CaptionBatch) -> int:
        return batch.images.shape[0]
