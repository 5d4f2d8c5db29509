"""Sentence sentiment (many-to-one over words): word embeddings -> RNNClassifier, with VADER's rule-based analyser
scored on the same test sentences in the same run."""
from __future__ import annotations

import json
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from apps.core import ClassifierTask, Stage
from apps.media import log_text_table
from datamodules.sentiment import POLARITY, TextBatch, vader_analyzer, vader_word_features
from datamodules.vocab import Vocabulary
from encoders.base import Encoded, Encoder


class VaderAccuracy(Metric):
    """Accuracy of VADER's compound score on the same sentences: > 0 is positive, otherwise negative."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, texts: list[str], target: Tensor) -> None:
        analyzer = vader_analyzer()
        preds = torch.tensor([int(analyzer.polarity_scores(t)["compound"] > 0) for t in texts], device=target.device)
        self.correct += (preds == target).sum()
        self.total += len(texts)

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class SentimentTask(ClassifierTask):
    """Classify sentences: WordEmbeddingEncoder -> RNNClassifier, with ClassifierTask's loss, metrics (acc, macro
    F1, confusion matrix) and predict; test adds VADER's accuracy on the same sentences (`test/acc_vader`).

    Args:
        encoder: word encoder; `vocab_size` and `word_features` are filled in from the vocabulary.
        decoder: many-to-one head; `in_dim` and `num_classes` are filled in from the encoder and the data.
        vocab: the vocabulary, one token a line (from the datamodule; stored in checkpoints so predict needs
            nothing else).
        class_names: labels (from the datamodule; stored in checkpoints).
        lexicon_features: append each word's VADER valence and negation flag (vader_word_features) to its embedding.
        num_logged_samples: misclassified validation sentences logged as a table after each validation.
        **kwargs: ClassifierTask's and SequenceTask's arguments (label_smoothing, lr, scheduler, ...).
    """

    real_inputs = "sentences"
    data_links = {"vocab": "vocab", "class_names": "class_names"}

    def __init__(
        self,
        encoder: Callable[[int, Tensor | None], Encoder],
        decoder: Callable[[int, int], nn.Module],
        vocab: str | None = None,
        class_names: list[str] | None = None,
        lexicon_features: bool = True,
        num_logged_samples: int = 16,
        **kwargs: Any,
    ) -> None:
        vocabulary = Vocabulary(self.require(vocab, "a vocabulary", "vocab").split("\n"))
        words = encoder(len(vocabulary), vader_word_features(vocabulary.tokens) if lexicon_features else None)
        super().__init__(words, decoder, class_names=class_names, num_logged_samples=num_logged_samples, **kwargs)
        self.vocab = vocabulary

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) word ids with (B,) lengths -> (B, num_classes) logits."""
        return self.decoder(self.encoder(tokens, lengths))

    def export_spec(self, datamodule: Any) -> Any:
        """(B, T) word ids, (B,) lengths -> (B, classes) logits."""
        from apps.export import ExportSpec

        def examples(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            return {"tokens": torch.randint(4, len(self.vocab), (batch, 12), generator=g),
                    "lengths": torch.tensor([12 - (i % 2) * 5 for i in range(batch)])}

        dynamic = {"tokens": {0: "batch", 1: "words"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
        return ExportSpec(lambda m, tokens, lengths: (m["decoder"](m["encoder"](tokens, lengths)),),
                          {"encoder": self.encoder, "decoder": self.decoder}, ["logits"], dynamic,
                          {"labels": self.class_names, "vocab": self.vocab.tokens,
                           "tokens": "ids of the lower-cased words in `vocab` (unknown words: <unk>), padded with "
                                     "<pad> after `lengths`"}, examples)

    def encode(self, batch: TextBatch) -> Encoded:
        return self.encoder(batch.tokens, batch.lengths)

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        vader = stage == "test" and self.class_names == POLARITY  # VADER tells polarity only
        return super().build_metrics(stage) | ({"acc_vader": VaderAccuracy()} if vader else {})

    def metric_inputs(self, batch: TextBatch, logits: Tensor, stage: Stage) -> dict[str, Any]:
        return super().metric_inputs(batch, logits, stage) | {"texts": batch.texts}

    def media_samples(self, batch: TextBatch, logits: Tensor, limit: int) -> list[list[Any]]:
        """Misclassified sentences: [id, text, true, predicted, probability]."""
        probs, preds = logits.softmax(-1).max(-1)
        wrong = (preds != batch.labels).nonzero().flatten().tolist()[:limit]
        return [[batch.ids[i], batch.texts[i], self.class_names[int(batch.labels[i])], self.class_names[int(preds[i])],
                 round(float(probs[i]), 3)] for i in wrong]

    def log_media(self, stage: Stage, samples: list[list[Any]], values: dict[str, Tensor]) -> None:
        super().log_media(stage, samples, values)  # the confusion matrix
        if stage == "val":  # logged when empty too, so every validation has its table
            log_text_table(self.logger, "val/misclassified", ["id", "text", "true", "predicted", "probability"],
                           samples, self.global_step)

    @torch.no_grad()
    def predict_step(self, batch: TextBatch, batch_idx: int) -> dict[str, dict[str, Any]]:
        """{file:line: {label, prob, text}}."""
        probs, preds = self(batch.tokens, batch.lengths).softmax(-1).max(-1)
        return {i: {"label": self.class_names[int(c)], "prob": round(float(p), 6), "text": text}
                for i, p, c, text in zip(batch.ids, probs, preds, batch.texts)}

    def write_predictions(self, outputs: list[dict[str, Any]], path: str) -> str:
        """One line per input line, in its order: `label<TAB>probability<TAB>sentence` (a JSON list for a .json path)."""
        merged = {name: record for batch in outputs for name, record in batch.items()}
        records = [merged[k] | {"line": int(k.rpartition(":")[2])} for k in sorted(merged, key=lambda k: int(k.rpartition(":")[2]))]
        with open(path, "w", encoding="utf-8") as f:
            if path.endswith(".json"):
                json.dump(records, f, indent=1, ensure_ascii=False)
            else:
                f.writelines(f"{r['label']}\t{r['prob']:.6f}\t{r['text']}\n" for r in records)
        return f"{len(records)} sentences written to {path}"
