"""Image captioning (one-to-many): CNN encoder -> RNN caption decoder, BLEU/CIDEr-D/ROUGE-L against all references."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Literal

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from apps.caption_metrics import CIDErD, ROUGEL
from apps.core import SequenceTask, Stage
from apps.media import attention_strip, log_image_table
from datamodules.captioning import MEAN, STD, CaptionBatch
from datamodules.feature_cache import FeatureSource, attach_feature_source
from datamodules.vocab import Vocabulary
from decoders.caption import TokenDecoder
from decoders.schedules import SamplingSchedule, sampling_probability
from decoders.search import Generated, beam_search, sample
from encoders.base import Encoded, Encoder


class CaptioningTask(SequenceTask):
    """Caption images: teacher-forced cross-entropy in training, generated captions scored by BLEU-1..4,
    CIDEr-D and ROUGE-L.

    Args:
        encoder: image encoder (any `Encoder`), e.g. SmallCNNEncoder or ResNetEncoder (`spatial: true` for attention).
        decoder: caption decoder (CaptionDecoder or ShowAttendTellDecoder); `in_dim` and `vocab_size` are filled
            in from the encoder and the vocabulary.
        vocab: token list (from the datamodule; stored in checkpoints so predict needs nothing else).
        max_caption_len: longest caption generated, in words.
        decoding: greedy, beam (batched beam search) or sample (temperature sampling), for validation, test and predict.
        beam_size: beams per image.
        length_penalty: beam search ranks by log p / ((5 + length) / 6) ** length_penalty; 0 = raw log p.
        temperature: softmax temperature of `decoding: sample`.
        scheduled_sampling: off, or the schedule by which training feeds the decoder its own previous word instead
            of the true one: linear, inverse_sigmoid or exponential over the fraction of training done.
        sampling_max_prob: the probability reached at the schedule's end.
        sampling_start: fraction of training before the schedule starts rising.
        sampling_end: fraction of training at which it reaches `sampling_max_prob`.
        attention_regularization: weight of Show-Attend-Tell's doubly stochastic penalty (attending decoders only).
        freeze_encoder: keep the encoder's weights (and batch-norm statistics) fixed.
        encoder_lr: the encoder's own learning rate when fine-tuned (default: the task's `lr`).
        label_smoothing: cross-entropy label smoothing.
        cache_features: with a frozen encoder, compute its output once per image into a disk cache
            (datamodules/feature_cache.py) and train and evaluate the decoder on that: decoder speed.
        trained_on: what the model was trained on, set at fit from the datamodule (stored in the checkpoint);
            predict prints a note when it was generated data.
        num_logged_samples: validation images logged with their captions (and attention maps) each epoch.
    """

    main_metric = "val/bleu4"
    main_metric_mode = "max"

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], TokenDecoder],
        vocab: list[str] | None = None,
        max_caption_len: int = 20,
        decoding: Literal["greedy", "beam", "sample"] = "greedy",
        beam_size: int = 3,
        length_penalty: float = 0.0,
        temperature: float = 1.0,
        scheduled_sampling: Literal["off"] | SamplingSchedule = "off",
        sampling_max_prob: float = 0.25,
        sampling_start: float = 0.3,
        sampling_end: float = 0.8,
        attention_regularization: float = 1.0,
        freeze_encoder: bool = False,
        encoder_lr: float | None = None,
        label_smoothing: float = 0.0,
        cache_features: bool = False,
        trained_on: str | None = None,
        num_logged_samples: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not vocab:
            raise ValueError("CaptioningTask needs a vocabulary: run it through the CLI with a datamodule, or pass vocab=")
        self.vocab = Vocabulary(vocab)
        self.encoder = encoder
        self.decoder = decoder(encoder.out_dim, len(self.vocab))
        self.max_caption_len, self.label_smoothing = max_caption_len, label_smoothing
        self.decoding, self.beam_size, self.length_penalty, self.temperature = decoding, beam_size, length_penalty, temperature
        self.scheduled_sampling = scheduled_sampling
        self.sampling_max_prob, self.sampling_start, self.sampling_end = sampling_max_prob, sampling_start, sampling_end
        self.attention_regularization = attention_regularization
        self.freeze_encoder, self.encoder_lr = freeze_encoder, encoder_lr
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.cache_features, self.trained_on = cache_features, trained_on
        self.num_logged_samples = num_logged_samples
        self.metrics = nn.ModuleDict({stage: self._metrics() for stage in ("val", "test")})
        self._samples: list[tuple[np.ndarray, str, str, np.ndarray | None]] = []

    @staticmethod
    def _metrics() -> MetricCollection:
        bleu = {f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}
        # compute_groups would compare the text metrics' list states, which hold strings
        return MetricCollection({**bleu, "cider": CIDErD(), "rouge_l": ROUGEL()}, compute_groups=False)

    # --- generation -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.cache_features and stage != "predict" and self._trainer is not None:
            source = FeatureSource(self.encoder, lambda images: self.encoder(images).seq, tag="seq")
            attach_feature_source(self.trainer.datamodule, source, self.freeze_encoder)

    def on_fit_start(self) -> None:
        # what predict tells its user: a model of generated data knows nothing of real photographs or footage
        self.trained_on = self.hparams["trained_on"] = getattr(self.trainer.datamodule, "data_source", None)

    def on_predict_start(self) -> None:
        if self.trained_on and self.trained_on.startswith("generated"):
            print(f"note: this checkpoint was trained on {self.trained_on}, not on real photographs; expect "
                  "nonsense on anything else (configs/*_pretrained.yaml trains on your own data)")

    def encode(self, batch: CaptionBatch) -> Encoded:
        """The batch's cached features when it carries them, else the encoder run on its images."""
        if batch.features is not None:
            return Encoded(batch.features, None)
        return self.encoder(batch.images)

    def forward(self, images: Tensor) -> Generated:
        """(B, 3, H, W) images -> generated captions with the configured decoding."""
        return self.generate(self.encoder(images))

    def generate(self, encoded: Encoded) -> Generated:
        args = (self.decoder, encoded, self.vocab.bos_id, self.vocab.eos_id, self.max_caption_len)
        if self.decoding == "beam":
            return beam_search(*args, beam_size=self.beam_size, length_penalty=self.length_penalty)
        return sample(*args, temperature=self.temperature if self.decoding == "sample" else 0.0)

    def captions(self, generated: Generated) -> list[str]:
        return [" ".join(self.vocab.decode(row.tolist())) for row in generated.tokens]

    # --- training -------------------------------------------------------------------------------
    def sample_prob(self) -> float:
        """Current scheduled-sampling probability (0 outside training or when switched off)."""
        if self.scheduled_sampling == "off" or not self.training:
            return 0.0
        return sampling_probability(
            self.training_progress(), self.scheduled_sampling, self.sampling_start, self.sampling_end, self.sampling_max_prob
        )

    def compute_loss(self, batch: CaptionBatch, stage: Stage) -> tuple[Tensor, None]:
        # Teacher forcing: the input is the target shifted right by one (<bos> w1 .. wn -> w1 .. wn <eos>).
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]
        sample_prob = self.sample_prob()
        if stage == "train" and self.scheduled_sampling != "off":
            self.log("train/sample_prob", sample_prob, on_step=True, on_epoch=False)
        out = self.decoder(self.encode(batch), inputs, sample_prob=sample_prob)  # logits (B, L, V)
        loss = F.cross_entropy(
            out.logits.flatten(0, 1), targets.flatten(), ignore_index=self.vocab.pad_id, label_smoothing=self.label_smoothing
        )
        if out.attention is not None and self.attention_regularization > 0:
            # Doubly stochastic attention: over the caption's real words, each region's weights should sum to ~1.
            word_mask = (targets != self.vocab.pad_id).unsqueeze(-1).float()  # (B, L, 1)
            coverage = (out.attention * word_mask).sum(dim=1)  # (B, N)
            penalty = ((1.0 - coverage) ** 2).mean()
            self.log(f"{stage}/attention_penalty", penalty, batch_size=self.batch_size_of(batch))
            loss = loss + self.attention_regularization * penalty
        return loss, None

    def param_groups(self) -> list[dict[str, Any]]:
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": decoder}]
        if encoder:
            groups.append({"params": encoder, "lr": self.encoder_lr if self.encoder_lr is not None else self.lr})
        return groups

    def on_train_epoch_start(self) -> None:
        if self.freeze_encoder:
            self.encoder.eval()  # frozen also means frozen batch-norm statistics

    # --- evaluation -----------------------------------------------------------------------------
    def update_metrics(self, batch: CaptionBatch, outputs: None, stage: Stage) -> None:
        generated = self.generate(self.encode(batch))
        predictions = self.captions(generated)
        references = [[" ".join(ref) for ref in refs] for refs in batch.references]
        self.metrics[stage].update(predictions, references)
        if stage == "val" and len(self._samples) < self.num_logged_samples and batch.images is not None:
            for i, picture in enumerate(self._pictures(batch.images[: self.num_logged_samples - len(self._samples)])):
                strip = self._attention_strip(picture, generated, i)
                self._samples.append((picture, predictions[i], " / ".join(references[i]), strip))

    def _pictures(self, images: Tensor) -> list[np.ndarray]:
        pictures = ((images * STD.to(images.device) + MEAN.to(images.device)).clamp(0, 1) * 255).byte()
        return [p.permute(1, 2, 0).cpu().numpy() for p in pictures]

    def _attention_strip(self, picture: np.ndarray, generated: Generated, i: int) -> np.ndarray | None:
        """The image followed by one heat map per generated word, or None for a decoder that does not attend."""
        if generated.attention is None or generated.attention.shape[-1] <= 1:
            return None
        n = int(generated.lengths[i])
        words = self.vocab.decode(generated.tokens[i].tolist())
        return attention_strip(picture, generated.attention[i, :n].float().cpu().numpy(), words[:n])

    def compute_metrics(self, stage: Stage) -> dict[str, Tensor]:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        return values

    def on_eval_epoch_end(self, stage: Stage) -> None:
        if stage == "val" and self._samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            images, preds, refs, strips = zip(*self._samples)
            rows = [[p, r] for p, r in zip(preds, refs)]
            log_image_table(self.logger, "val/samples", list(images), ["prediction", "references"], rows, self.global_step)
            if strips[0] is not None:
                log_image_table(self.logger, "val/attention", list(strips), ["prediction"], [[p] for p in preds],
                                self.global_step)
        self._samples = []

    # --- prediction -----------------------------------------------------------------------------
    def predict_step(self, batch: CaptionBatch, batch_idx: int) -> list[dict[str, Any]]:
        generated = self(batch.images)
        captions = self.captions(generated)
        pictures = self._pictures(batch.images)
        return [
            {"file": name, "caption": caption, "attention": self._attention_strip(picture, generated, i)}
            for i, (name, caption, picture) in enumerate(zip(batch.image_ids, captions, pictures))
        ]

    @staticmethod
    def write_predictions(outputs: list[list[dict[str, Any]]], path: str) -> str:
        """{filename: caption} JSON at `path`; attending decoders also get <path without .json>_attention/<file>.png
        (the image and one heat map per word)."""
        records = [r for batch in outputs for r in batch]
        with open(path, "w") as f:
            json.dump({r["file"]: r["caption"] for r in records}, f, indent=2, sort_keys=True)
        strips = [r for r in records if r["attention"] is not None]
        if not strips:
            return f"{len(records)} captions"
        folder = os.path.splitext(path)[0] + "_attention"
        os.makedirs(folder, exist_ok=True)
        from PIL import Image

        for r in strips:
            Image.fromarray(r["attention"]).save(os.path.join(folder, os.path.splitext(r["file"])[0] + ".png"))
        return f"{len(records)} captions, attention maps in {folder}"

    def batch_size_of(self, batch: CaptionBatch) -> int:
        return len(batch.image_ids)
