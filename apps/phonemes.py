"""Phoneme recognition (many-to-many without an alignment): audio encoder -> bidirectional RNN -> CTC."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torchmetrics.text import WordErrorRate

from apps.core import SequenceTask, Stage
from apps.media import log_audio_table
from datamodules.phonemes import PhonemeBatch
from datamodules.speech_readers import fold
from decoders.ctc import BLANK, CTCDecoder, beam_decode, greedy_decode
from encoders.base import Encoder


class PhonemeTask(SequenceTask):
    """Recognise phonemes with CTC; phoneme error rate (PER) = edit distance / reference length.

    Args:
        encoder: audio encoder (any `Encoder` taking (B, S) waveforms and lengths), e.g. LogMelEncoder.
        decoder: CTC head; `in_dim` and `num_classes` (phonemes + blank) are filled in from the encoder and data.
        phonemes: phoneme inventory (from the datamodule; stored in checkpoints so predict needs nothing else).
        phoneme_folding: phoneme -> scoring phoneme ("" drops it), e.g. TIMIT's 61 -> 39 (from the datamodule).
        beam_width: prefix beam search width for test and predict (1 = greedy); validation is always greedy.
            With a beam, test also reports `test/per_greedy`.
        num_logged_samples: validation utterances logged with their audio, reference and prediction each epoch.
    """

    main_metric = "val/per"
    main_metric_mode = "min"

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], CTCDecoder],
        phonemes: list[str] | None = None,
        phoneme_folding: dict[str, str] | None = None,
        beam_width: int = 1,
        num_logged_samples: int = 4,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not phonemes:
            raise ValueError("PhonemeTask needs a phoneme inventory: run it through the CLI with a datamodule, or pass phonemes=")
        self.phonemes = list(phonemes)  # id i + 1 <-> phonemes[i]; id 0 is the CTC blank
        self.phoneme_folding = phoneme_folding
        self.encoder = encoder
        self.decoder = decoder(encoder.out_dim, len(self.phonemes) + 1)
        self.ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
        self.beam_width, self.num_logged_samples = beam_width, num_logged_samples
        self.metrics = nn.ModuleDict({"val": WordErrorRate(), "test": WordErrorRate(), "test_greedy": WordErrorRate()})
        self._samples: list[tuple[np.ndarray, str, str]] = []

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, S) waveforms, (B,) lengths -> (B, T, P + 1) log-probabilities and (B,) valid steps."""
        encoded = self.encoder(audio, lengths)
        log_probs = self.decoder(encoded).float().log_softmax(-1)
        B, T, _ = log_probs.shape
        steps = encoded.lengths if encoded.lengths is not None else torch.full((B,), T, dtype=torch.long, device=log_probs.device)
        return log_probs, steps

    def decode(self, log_probs: Tensor, steps: Tensor, beam_width: int = 1) -> list[list[str]]:
        ids = greedy_decode(log_probs, steps) if beam_width <= 1 else beam_decode(log_probs, steps, beam_width)
        return [[self.phonemes[i - 1] for i in row] for row in ids]

    def transcribe(self, audio: Tensor, lengths: Tensor | None = None, beam_width: int | None = None) -> list[list[str]]:
        return self.decode(*self(audio, lengths), self.beam_width if beam_width is None else beam_width)

    def compute_loss(self, batch: PhonemeBatch, stage: Stage) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        log_probs, steps = self(batch.audio, batch.audio_lengths)
        # CTCLoss wants (T, B, C); `mean` divides each utterance's loss by its target length, then averages
        loss = self.ctc(log_probs.transpose(0, 1), batch.targets, steps, batch.target_lengths)
        return loss, (log_probs.detach(), steps)

    def _score(self, stage: str, hypotheses: list[list[str]], references: list[list[str]]) -> None:
        # PER is WER over phoneme "words": torchmetrics counts edits over space-separated tokens
        preds = [" ".join(fold(h, self.phoneme_folding)) for h in hypotheses]
        refs = [" ".join(fold(r, self.phoneme_folding)) for r in references]
        self.metrics[stage].update(preds, refs)

    def update_metrics(self, batch: PhonemeBatch, outputs: tuple[Tensor, Tensor], stage: Stage) -> None:
        log_probs, steps = outputs
        greedy = self.decode(log_probs, steps)
        if stage == "test" and self.beam_width > 1:
            self._score("test_greedy", greedy, batch.phonemes)
            self._score("test", self.decode(log_probs, steps, self.beam_width), batch.phonemes)
        else:
            self._score(stage, greedy, batch.phonemes)
        if stage == "val":
            for i in range(min(len(greedy), self.num_logged_samples - len(self._samples))):
                audio = batch.audio[i, : batch.audio_lengths[i]].float().cpu().numpy()
                self._samples.append((audio, " ".join(batch.phonemes[i]), " ".join(greedy[i])))

    def compute_metrics(self, stage: Stage) -> dict[str, Tensor]:
        values = {"per": self.metrics[stage].compute()}
        self.metrics[stage].reset()
        if stage == "test" and self.beam_width > 1:
            values["per_greedy"] = self.metrics["test_greedy"].compute()
            self.metrics["test_greedy"].reset()
        return values

    def on_eval_epoch_end(self, stage: Stage) -> None:
        if stage == "val" and self._samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            audios, refs, preds = zip(*self._samples)
            rows = [[r, p] for r, p in zip(refs, preds)]
            rate = getattr(self.encoder, "sample_rate", 16000)
            log_audio_table(self.logger, "val/samples", list(audios), rate, ["reference", "prediction"], rows, self.global_step)
        self._samples = []

    def align(self, log_probs: Tensor, labels: list[str]) -> list[dict[str, Any]]:
        """(T, P + 1) log-probabilities of one utterance + its labels -> [{phoneme, start, end}] in seconds (CTC alignment)."""
        if not labels:
            return []
        seconds = getattr(self.encoder, "seconds_per_step", 0.0)
        index = {p: i + 1 for i, p in enumerate(self.phonemes)}
        targets = torch.tensor([[index[p] for p in labels]], dtype=torch.int32)
        path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=BLANK)  # (1, T) each
        spans = AF.merge_tokens(path[0], scores[0].exp(), blank=BLANK)
        return [
            {"phoneme": p, "start": round(s.start * seconds, 3), "end": round(s.end * seconds, 3)}
            for p, s in zip(labels, spans)
        ]

    def predict_step(self, batch: PhonemeBatch, batch_idx: int) -> dict[str, dict[str, Any]]:
        log_probs, steps = self(batch.audio, batch.audio_lengths)
        hypotheses = self.decode(log_probs, steps, self.beam_width)
        return {
            utt: {"phonemes": " ".join(hyp), "segments": self.align(log_probs[b, : steps[b]], hyp)}
            for b, (utt, hyp) in enumerate(zip(batch.utt_ids, hypotheses))
        }

    @staticmethod
    def write_predictions(outputs: list[dict[str, dict[str, Any]]], path: str) -> str:
        """Merge per-batch {audio file: {"phonemes", "segments"}} dicts into one JSON file; returns what was written."""
        merged = {name: result for batch in outputs for name, result in batch.items()}
        with open(path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
        return f"{len(merged)} transcriptions"

    def batch_size_of(self, batch: PhonemeBatch) -> int:
        return batch.audio.shape[0]
