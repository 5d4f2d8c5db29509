"""Phoneme recognition (many-to-many without an alignment): audio encoder -> bidirectional RNN -> CTC."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.text import WordErrorRate

from apps.core import SequenceTask, Stage
from apps.media import log_audio_table
from datamodules.phonemes import PhonemeBatch
from datamodules.readers.speech import fold
from decoders.ctc import BLANK, CTCDecoder, beam_decode, greedy_decode
from encoders.base import Encoder


class GreedyPER(WordErrorRate):
    """PER of the greedy transcriptions, beside a beam search's `per` in one collection."""

    def update(self, greedy_preds: list[str], target: list[str]) -> None:
        super().update(greedy_preds, target)


class PhonemeTask(SequenceTask):
    """Recognise phonemes with CTC; phoneme error rate (PER) = edit distance / reference length. Validation
    utterances are logged with their audio, reference and prediction (`num_logged_samples`).

    Args:
        encoder: audio encoder (any `Encoder` taking (B, S) waveforms and lengths), e.g. LogMelEncoder.
        decoder: CTC head; `in_dim` and `num_classes` (phonemes + blank) are filled in from the encoder and data.
        phonemes: phoneme inventory (from the datamodule; stored in checkpoints so predict needs nothing else).
        phoneme_folding: phoneme -> scoring phoneme ("" drops it), e.g. TIMIT's 61 -> 39 (from the datamodule).
        beam_width: prefix beam search width for test and predict (1 = greedy); validation is always greedy.
            With a beam, test also reports `test/per_greedy`.
    """

    main_metric = "val/per"
    main_metric_mode = "min"
    data_links = {"phonemes": "phonemes", "phoneme_folding": "phoneme_folding"}

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], CTCDecoder],
        phonemes: list[str] | None = None,
        phoneme_folding: dict[str, str] | None = None,
        beam_width: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.phonemes = list(self.require(phonemes, "a phoneme inventory", "phonemes"))  # id i + 1 <-> phonemes[i]; id 0 is the CTC blank
        self.phoneme_folding = phoneme_folding
        self.encoder = encoder
        self.decoder = decoder(encoder.out_dim, len(self.phonemes) + 1)
        self.ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
        self.beam_width = beam_width

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        # PER is WER over phoneme "words": torchmetrics counts edits over space-separated tokens
        return {"per": WordErrorRate(), **({"per_greedy": GreedyPER()} if stage == "test" and self.beam_width > 1 else {})}

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, S) waveforms, (B,) lengths -> (B, T, P + 1) log-probabilities and (B,) valid steps."""
        encoded = self.encoder(audio, lengths)
        log_probs = self.decoder(encoded).float().log_softmax(-1)
        B, T, _ = log_probs.shape
        steps = encoded.lengths if encoded.lengths is not None else torch.full((B,), T, dtype=torch.long, device=log_probs.device)
        return log_probs, steps

    def export_spec(self, datamodule: Any) -> Any:
        """(B, S) waveforms, (B,) lengths -> (B, T, P + 1) log-probabilities and (B,) valid steps (CTC: greedy
        decoding = arg-max, merge repeats, drop the blank 0)."""
        from apps.export import ExportSpec

        rate = getattr(self.encoder, "sample_rate", 16000)

        def examples(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {"audio": 0.1 * torch.randn(batch, rate, generator=g),
                    "lengths": torch.tensor([rate - (i % 2) * rate // 3 for i in range(batch)])}

        def fn(m: nn.ModuleDict, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
            encoded = m["encoder"](audio, lengths)
            return m["decoder"](encoded).float().log_softmax(-1), encoded.lengths

        dynamic = {"audio": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, "log_probs": {0: "batch", 1: "steps"},
                   "steps": {0: "batch"}}
        return ExportSpec(fn, {"encoder": self.encoder, "decoder": self.decoder}, ["log_probs", "steps"],
                          dynamic, {"phonemes": self.phonemes, "blank": 0, "sample_rate": rate,
                                    "audio": f"mono waveform at {rate} Hz in [-1, 1], padded after `lengths`; "
                                             "class i + 1 is phonemes[i]"}, examples,
                          onnx="torch.onnx cannot express torchaudio's complex STFT (the TorchScript-based exporter), "
                               "and torch.export stops at the variable-length packing (dynamo)")

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

    def scored(self, hypotheses: list[list[str]]) -> list[str]:
        """Transcriptions as the metrics see them: folded (e.g. TIMIT's 61 -> 39 phonemes), space-separated."""
        return [" ".join(fold(h, self.phoneme_folding)) for h in hypotheses]

    def metric_inputs(self, batch: PhonemeBatch, outputs: tuple[Tensor, Tensor], stage: Stage) -> dict[str, Any]:
        greedy = self.scored(self.decode(*outputs))
        inputs = {"preds": greedy, "target": self.scored(batch.phonemes)}
        if "per_greedy" in self.metrics[stage]:
            inputs |= {"preds": self.scored(self.decode(*outputs, self.beam_width)), "greedy_preds": greedy}
        return inputs

    def media_samples(self, batch: PhonemeBatch, outputs: tuple[Tensor, Tensor], limit: int) -> list[tuple]:
        log_probs, steps = outputs
        greedy = self.decode(log_probs[:limit], steps[:limit])
        return [(batch.audio[i, : batch.audio_lengths[i]].float().cpu().numpy(), " ".join(batch.phonemes[i]), " ".join(hyp))
                for i, hyp in enumerate(greedy)]

    def log_media(self, stage: Stage, samples: list[tuple], values: dict[str, Tensor]) -> None:
        if samples:
            audios, refs, preds = zip(*samples)
            log_audio_table(self.logger, "val/samples", list(audios), getattr(self.encoder, "sample_rate", 16000),
                            ["reference", "prediction"], list(map(list, zip(refs, preds))), self.global_step)

    def align(self, log_probs: Tensor, labels: list[str]) -> list[dict[str, Any]]:
        """(T, P + 1) log-probabilities of one utterance + its labels -> [{phoneme, start, end}] in seconds (CTC alignment)."""
        if not labels:
            return []
        seconds = getattr(self.encoder, "seconds_per_step", 0.0)
        index = {p: i + 1 for i, p in enumerate(self.phonemes)}
        targets = torch.tensor([[index[p] for p in labels]], dtype=torch.int32)
        path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=BLANK)  # (1, T) each
        spans = AF.merge_tokens(path[0], scores[0].exp(), blank=BLANK)
        return [{"phoneme": p, "start": round(s.start * seconds, 3), "end": round(s.end * seconds, 3)} for p, s in zip(labels, spans)]

    def predict_step(self, batch: PhonemeBatch, batch_idx: int) -> dict[str, dict[str, Any]]:
        log_probs, steps = self(batch.audio, batch.audio_lengths)
        hypotheses = self.decode(log_probs, steps, self.beam_width)
        ipa = self.ipa_symbols()
        return {utt: {"phonemes": " ".join(hyp), "segments": self.align(log_probs[b, : steps[b]], hyp)}
                | ({"ipa": " ".join(ipa[p] for p in hyp)} if ipa else {})
                for b, (utt, hyp) in enumerate(zip(batch.ids, hypotheses))}

    def ipa_symbols(self) -> dict[str, str] | None:
        """Each output phoneme's IPA symbol when the model speaks espeak-ng's inventory (the generated corpus;
        datamodules/synthetic/speech_corpus.py `phoneme_legend`), else None (TIMIT or your own labels)."""
        if not hasattr(self, "_ipa"):
            import subprocess

            from datamodules.synthetic.speech_corpus import phoneme_legend

            try:
                legend = phoneme_legend()
            except (ImportError, OSError, RuntimeError, subprocess.CalledProcessError):  # no espeak-ng: mnemonics alone
                legend = {}
            self._ipa = {p: legend[p][0] for p in self.phonemes} if set(self.phonemes) <= set(legend) else None
        return self._ipa
