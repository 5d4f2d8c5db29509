"""Image captioning (one-to-many): CNN encoder -> RNN caption decoder, BLEU/CIDEr-D/ROUGE-L against all references;
cross-entropy training or self-critical fine-tuning on CIDEr-D (apps/scst.py)."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import BLEUScore

from apps.caption_metrics import CIDErD, CiderDScorer, ROUGEL
from apps.core import EncoderTask, Stage
from apps.scst import ScstBaseline, policy_gradient_loss, scst_baseline
from apps.media import attention_strip, log_image_table, to_uint8
from datamodules.base import MEAN, STD
from datamodules.captioning import CaptionBatch
from datamodules.feature_cache import FeatureSource
from datamodules.vocab import Vocabulary
from decoders.caption import TokenDecoder
from decoders.schedules import SamplingSchedule
from decoders.search import Generated, beam_search, sample, sample_with_log_probs
from encoders.base import Encoded, Encoder


class CaptioningTask(EncoderTask):
    """Caption images: teacher-forced cross-entropy (or self-critical training) in training, generated captions
    scored by BLEU-1..4, CIDEr-D and ROUGE-L.

    Args:
        encoder: image encoder (any `Encoder`), e.g. SmallCNNEncoder or ResNetEncoder (`spatial: true` for attention).
        decoder: caption decoder (CaptionDecoder, ShowAttendTellDecoder or UpDownDecoder); `in_dim` and `vocab_size` are filled
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
        label_smoothing: cross-entropy label smoothing.
        objective: xe (teacher-forced cross-entropy) or scst (self-critical sequence training, Rennie et al. 2017:
            captions sampled from the model, reward CIDEr-D against the image's references with document frequencies
            of the training references; start it from a cross-entropy model with `init_from`). With scst the best
            checkpoint is picked by val/cider, what it optimises; validation still reports the cross-entropy loss.
        scst_samples: captions sampled per image in scst training.
        scst_baseline: greedy (the reward of the greedy caption, the paper's) or mean (of the image's other samples).
        num_logged_samples: validation images logged with their captions (and attention maps) each epoch.
    """

    main_metric = "val/bleu4"
    main_metric_mode = "max"
    data_links = {"vocab": "vocab", "max_caption_len": "max_caption_len"}
    real_inputs = "real photographs"

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
        label_smoothing: float = 0.0,
        objective: Literal["xe", "scst"] = "xe",
        scst_samples: int = 5,
        scst_baseline: ScstBaseline = "greedy",
        num_logged_samples: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, num_logged_samples=num_logged_samples, **kwargs)
        self.save_hyperparameters()
        self.vocab = Vocabulary(self.require(vocab, "a vocabulary", "vocab"))
        self.decoder = decoder(encoder.out_dim, len(self.vocab))
        self.max_caption_len, self.label_smoothing = max_caption_len, label_smoothing
        self.decoding, self.beam_size, self.length_penalty, self.temperature = decoding, beam_size, length_penalty, temperature
        self.scheduled_sampling = scheduled_sampling
        self.sampling_max_prob, self.sampling_start, self.sampling_end = sampling_max_prob, sampling_start, sampling_end
        self.attention_regularization = attention_regularization
        if objective not in ("xe", "scst"):
            raise ValueError(f"unknown objective {objective!r}; choose xe or scst")
        if objective == "scst" and (scst_samples < 1 or (scst_baseline == "mean" and scst_samples < 2)):
            raise ValueError(f"scst_samples {scst_samples}: need at least 1 (2 with the mean baseline)")
        self.objective, self.scst_samples, self.scst_baseline = objective, scst_samples, scst_baseline
        self.cider_reward: CiderDScorer | None = None  # built from the training references at fit
        if objective == "scst":
            self.main_metric = "val/cider"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.objective == "scst" and self.cider_reward is None:
            references = getattr(self.trainer.datamodule, "train_references", None)
            if references is None:
                raise ValueError("objective scst needs a datamodule with `train_references` (the training captions "
                                 "whose document frequencies CIDEr-D's reward uses), e.g. CaptioningDataModule")
            self.cider_reward = CiderDScorer(references)

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        return {**{f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}, "cider": CIDErD(), "rouge_l": ROUGEL()}

    def feature_source(self) -> FeatureSource:
        return FeatureSource(self.encoder, lambda images: self.encoder(images).seq, tag="seq")

    def encode(self, batch: CaptionBatch) -> Encoded:
        """The batch's cached features when it carries them, else the encoder run on its images."""
        if batch.features is not None:
            return Encoded(batch.features, None)
        return self.encoder(batch.images)

    def export_spec(self, datamodule: Any) -> Any:
        """(B, 3, S, S) normalised images -> (B, max_caption_len) greedy token ids (<pad> after the end) and (B,)
        caption lengths; beam search is not exported."""
        from apps.export import ExportSpec

        S = getattr(datamodule, "image_size", 224)
        args = (self.vocab.bos_id, self.vocab.eos_id, self.max_caption_len)

        def fn(m: nn.ModuleDict, images: Tensor) -> tuple[Tensor, Tensor]:
            out = sample(m["decoder"], m["encoder"](images), *args, temperature=0.0, stop_early=False)
            return out.tokens, out.lengths

        def examples(batch: int) -> dict[str, Tensor]:
            return {"images": torch.randn(batch, 3, S, S, generator=torch.Generator().manual_seed(batch))}

        return ExportSpec(fn, {"encoder": self.encoder, "decoder": self.decoder}, ["tokens", "lengths"],
                          {"images": {0: "batch"}, "tokens": {0: "batch"}, "lengths": {0: "batch"}},
                          {"vocab": self.vocab.tokens, "images": f"RGB resized to {S}x{S}, scaled to [0, 1], minus "
                           "mean, over std (per channel)", "mean": MEAN.flatten().tolist(), "std": STD.flatten().tolist()},
                          examples)

    def forward(self, images: Tensor) -> Generated:
        """(B, 3, H, W) images -> generated captions with the configured decoding."""
        return self.generate(self.encoder(images))

    def generate(self, encoded: Encoded) -> Generated:
        args = (self.decoder, encoded, self.vocab.bos_id, self.vocab.eos_id, self.max_caption_len)
        if self.decoding == "beam":
            return beam_search(*args, beam_size=self.beam_size, length_penalty=self.length_penalty)
        return sample(*args, temperature=self.temperature if self.decoding == "sample" else 0.0)

    def captions(self, generated: Generated) -> list[str]:
        return [" ".join(words) for words in self.words(generated)]

    def words(self, generated: Generated) -> list[list[str]]:
        return [self.vocab.decode(row) for row in generated.tokens.tolist()]

    def compute_loss(self, batch: CaptionBatch, stage: Stage) -> tuple[Tensor, Generated | None]:
        """Teacher-forced loss (SCST's in training with objective scst); in evaluation also the captions generated
        from the same encoding."""
        if stage == "train" and self.objective == "scst":
            return self.scst_loss(batch), None
        # Teacher forcing: the input is the target shifted right by one (<bos> w1 .. wn -> w1 .. wn <eos>).
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]
        sample_prob = 0.0 if stage != "train" or self.scheduled_sampling == "off" else self.sampling_prob(
            self.scheduled_sampling, self.sampling_start, self.sampling_end, self.sampling_max_prob)
        encoded = self.encode(batch)
        out = self.decoder(encoded, inputs, sample_prob=sample_prob)  # logits (B, L, V)
        loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=self.vocab.pad_id,
                               label_smoothing=self.label_smoothing)
        if out.attention is not None and self.attention_regularization > 0:
            # Doubly stochastic attention: over the caption's real words, each region's weights should sum to ~1.
            word_mask = (targets != self.vocab.pad_id).unsqueeze(-1).float()  # (B, L, 1)
            coverage = (out.attention * word_mask).sum(dim=1)  # (B, N)
            penalty = ((1.0 - coverage) ** 2).mean()
            self.log(f"{stage}/attention_penalty", penalty, batch_size=self.batch_size_of(batch))
            loss = loss + self.attention_regularization * penalty
        return loss, None if stage == "train" else self.generate(encoded)

    def scst_loss(self, batch: CaptionBatch) -> Tensor:
        """Self-critical loss of one batch; logs train/reward (mean CIDEr-D of the samples), train/baseline and
        train/entropy (per sampled token)."""
        if self.cider_reward is None:
            raise RuntimeError("objective scst: the CIDEr-D reward is built in setup('fit'); "
                               "call task.setup('fit') under a Trainer, or set task.cider_reward = CiderDScorer(refs)")
        B, K = self.batch_size_of(batch), self.scst_samples
        encoded = self.encode(batch)
        rollout = sample_with_log_probs(self.decoder, encoded, self.vocab.bos_id, self.vocab.eos_id,
                                        self.max_caption_len, samples_per_image=K)
        references = [refs for refs in batch.references for _ in range(K)]  # rows i*K .. i*K+K-1 are image i's
        rewards = self.reward(rollout.generated, references).view(B, K)
        greedy_rewards = None
        if self.scst_baseline == "greedy":
            was_training = self.decoder.training
            self.decoder.eval()  # the caption the model would give at test time: no dropout
            try:
                greedy = sample(self.decoder, encoded, self.vocab.bos_id, self.vocab.eos_id, self.max_caption_len)
            finally:
                self.decoder.train(was_training)
            greedy_rewards = self.reward(greedy, batch.references)
        baseline = scst_baseline(rewards, self.scst_baseline, greedy_rewards)
        loss = policy_gradient_loss(rollout.log_probs, rollout.mask.float(), (rewards - baseline).view(-1))
        entropy = rollout.entropy.sum() / rollout.mask.sum().clamp(min=1)
        for name, value in (("reward", rewards.mean()), ("baseline", baseline.mean()), ("entropy", entropy)):
            self.log(f"train/{name}", value, batch_size=B)
        return loss

    def reward(self, generated: Generated, references: list[list[list[str]]]) -> Tensor:
        """(N,) CIDEr-D of each generated caption against its references."""
        return torch.tensor(self.cider_reward.scores(self.words(generated), references), device=generated.tokens.device)

    def metric_inputs(self, batch: CaptionBatch, generated: Generated, stage: Stage) -> dict[str, Any]:
        return {"preds": self.captions(generated), "target": [[" ".join(ref) for ref in refs] for refs in batch.references]}

    def media_samples(self, batch: CaptionBatch, generated: Generated, limit: int) -> list[tuple]:
        if batch.images is None:
            return []
        captions = self.captions(generated)
        return [(picture, captions[i], " / ".join(map(" ".join, batch.references[i])), self._attention_strip(picture, generated, i))
                for i, picture in enumerate(to_uint8(batch.images[:limit], MEAN, STD))]

    def _attention_strip(self, picture: np.ndarray, generated: Generated, i: int) -> np.ndarray | None:
        """The image followed by one heat map per generated word, or None for a decoder that does not attend."""
        if generated.attention is None or generated.attention.shape[-1] <= 1:
            return None
        n, words = int(generated.lengths[i]), self.vocab.decode(generated.tokens[i].tolist())
        return attention_strip(picture, generated.attention[i, :n].float().cpu().numpy(), words[:n])

    def log_media(self, stage: Stage, samples: list[tuple], values: dict[str, Tensor]) -> None:
        if not samples:
            return
        images, preds, refs, strips = zip(*samples)
        log_image_table(self.logger, "val/samples", list(images), ["prediction", "references"], list(map(list, zip(preds, refs))),
                        self.global_step)
        if strips[0] is not None:
            log_image_table(self.logger, "val/attention", list(strips), ["prediction"], [[p] for p in preds], self.global_step)

    def predict_step(self, batch: CaptionBatch, batch_idx: int) -> list[dict[str, Any]]:
        generated = self(batch.images)
        return [{"file": name, "caption": caption, "attention": self._attention_strip(picture, generated, i)}
                for i, (name, caption, picture) in enumerate(zip(batch.ids, self.captions(generated), to_uint8(batch.images, MEAN, STD)))]

    @staticmethod
    def write_predictions(outputs: list[list[dict[str, Any]]], path: str) -> str:
        """{filename: caption} JSON at `path`; attending decoders also get <path without .json>_attention/<file>.png
        (the image and one heat map per word)."""
        records = [r for batch in outputs for r in batch]
        with open(path, "w") as f:
            json.dump({r["file"]: r["caption"] for r in records}, f, indent=2, sort_keys=True)
        folder, strips = os.path.splitext(path)[0] + "_attention", [r for r in records if r["attention"] is not None]
        for r in strips:
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(r["attention"]).save(os.path.join(folder, os.path.splitext(r["file"])[0] + ".png"))
        return f"{len(records)} captions written to {path}" + (f", attention maps to {folder}" if strips else "")
