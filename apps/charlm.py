"""Character-level language modelling (many-to-many, char-rnn): predict every next character of a text with
truncated BPTT, the state carried across batches; score bits per character; sample new text from a prompt."""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.text import Perplexity

from apps.core import SequenceTask, Stage
from apps.media import log_text_table
from datamodules.charlm import PromptBatch, TextBatch
from decoders.charlm import CharRNN, detach_state
from decoders.rnn import State


class BitsPerCharacter(MeanMetric):
    """Mean negative log-likelihood of every scored character, in bits (nats / ln 2), over the whole split."""

    def update(self, nll: Tensor) -> None:  # (B, T) per-character NLL in nats
        super().update(nll / math.log(2))


class UnknownCharacters(SumMetric):
    """How many scored characters were outside the training alphabet (id 0)."""

    def update(self, target: Tensor) -> None:
        super().update((target == 0).sum())


class CharLMTask(SequenceTask):
    """Next-character prediction: CharRNN over (B, T) windows of B parallel text streams.

    Args:
        decoder: the character model; `vocab_size` is filled in from the alphabet.
        alphabet: the characters, index 0 the unknown symbol (from the datamodule; stored in checkpoints, so
            predict needs no text).
        carry_state: carry each row's RNN state (detached: truncated BPTT) into the next batch, whose row continues
            the same stream, so the model reads context beyond one window; false starts every window from zeros.
        temperature: sampling temperature (> 0) of predict and the logged samples; lower is more conservative.
        top_k: sample only among the k likeliest characters (None: all).
        sample_prompt: the prompt of the samples logged after each validation.
        sample_length: characters per logged sample.
        num_logged_samples: samples logged after each validation.
    """

    main_metric = "val/bpc"
    main_metric_mode = "min"
    data_links = {"alphabet": "alphabet"}

    def __init__(
        self,
        decoder: Callable[[int], CharRNN],
        alphabet: list[str] | None = None,
        carry_state: bool = True,
        temperature: float = 0.8,
        top_k: int | None = None,
        sample_prompt: str = "\n",
        sample_length: int = 300,
        num_logged_samples: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_logged_samples=num_logged_samples, **kwargs)
        self.save_hyperparameters()
        if not alphabet:
            raise ValueError("CharLMTask needs an alphabet: run it through the CLI with a datamodule, or pass alphabet=")
        self.alphabet = list(alphabet)
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        self.decoder = decoder(len(self.alphabet))
        self.carry_state, self.temperature, self.top_k = carry_state, temperature, top_k
        self.sample_prompt, self.sample_length = sample_prompt, sample_length
        self._state: dict[str, State] = {}  # per stage: the last window's final state, detached

    def build_metrics(self, stage: Stage) -> MetricCollection:
        return MetricCollection({"bpc": BitsPerCharacter(), "ppl": Perplexity(), "unknown_chars": UnknownCharacters()})

    def export_spec(self, datamodule: Any) -> Any:
        """(B, T) character ids and the recurrent state -> (B, T, V) logits and the next state (zeros to start);
        sampling the next character from the last logits and feeding it back stays with the caller."""
        from apps.export import ExportSpec

        with torch.no_grad():
            _, state = self.decoder(torch.zeros(1, 1, dtype=torch.long))
        names = ["h", "c"] if isinstance(state, tuple) else ["h"]
        shapes = [s.shape for s in (state if isinstance(state, tuple) else (state,))]  # (layers, B, H)

        def examples(batch: int) -> dict[str, Tensor]:
            g = torch.Generator().manual_seed(batch)
            chars = {"chars": torch.randint(1, len(self.alphabet), (batch, 16), generator=g)}
            return chars | {n: torch.randn(s[0], batch, s[2], generator=g) for n, s in zip(names, shapes)}

        def fn(m: nn.ModuleDict, chars: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            logits, out = m["decoder"](chars, tuple(state) if len(state) == 2 else state[0])
            return (logits, *(out if isinstance(out, tuple) else (out,)))

        dynamic = {"chars": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
        dynamic |= {n: {1: "batch"} for n in names} | {f"{n}_out": {1: "batch"} for n in names}
        return ExportSpec(fn, {"decoder": self.decoder}, ["logits", *(f"{n}_out" for n in names)],
                          dynamic, {"alphabet": self.alphabet, "chars": "ids of the characters in `alphabet` (0: any "
                                    "other)", "state": f"{', '.join(names)}: zeros of {[list(s) for s in shapes]} "
                                    "(batch 1) to start, then the previous call's outputs"}, examples)

    def forward(self, chars: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """(B, T) ids -> (B, T, V) logits and the final state."""
        return self.decoder(chars, state)

    def compute_loss(self, batch: TextBatch, stage: Stage) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        carried = self._state.get(stage) if self.carry_state and not batch.start else None
        logits, state = self(batch.inputs, carried)  # (B, T, V)
        self._state[stage] = detach_state(state)
        nll = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")  # (B, T) nats
        return nll.mean(), (logits.detach(), nll.detach())

    def metric_inputs(self, batch: TextBatch, outputs: tuple[Tensor, Tensor], stage: Stage) -> dict[str, Any]:
        logits, nll = outputs
        return {"nll": nll, "preds": logits, "target": batch.targets}

    def generate(self, prompt: str, length: int, generator: torch.Generator | None = None) -> str:
        """`prompt` followed by `length` sampled characters."""
        unknown = sorted({c for c in prompt if c not in self.index})
        if unknown:
            warnings.warn(f"prompt characters outside the model's alphabet read as the unknown symbol: {unknown}")
        ids = [self.index.get(c, 0) for c in prompt or "\n"]
        was_training = self.training
        self.eval()
        out = self.decoder.generate(torch.tensor([ids], device=self.device), length, self.temperature, self.top_k,
                                    banned=0, generator=generator)
        self.train(was_training)
        return prompt + "".join(self.alphabet[i] for i in out[0].tolist())

    def log_media(self, stage: Stage, samples: list[Any], values: dict[str, Tensor]) -> None:
        if stage != "val":
            return
        generator = torch.Generator(self.device).manual_seed(0)  # the same draws each validation: comparable
        rows = [[self.sample_prompt, self.generate(self.sample_prompt, self.sample_length, generator)]
                for _ in range(self.num_logged_samples)]
        log_text_table(self.logger, "val/samples", ["prompt", "sample"], rows, self.global_step)

    def predict_step(self, batch: PromptBatch, batch_idx: int) -> dict[str, dict[str, Any]]:
        """{sample id: {prompt, text (prompt + generated), temperature, top_k}}."""
        text = self.generate(batch.prompt, batch.length)
        return {batch.ids[0]: {"prompt": batch.prompt, "text": text, "temperature": self.temperature, "top_k": self.top_k}}

    def write_predictions(self, outputs: list[dict[str, Any]], path: str) -> str:
        for batch in outputs:
            for record in batch.values():
                print(record["text"])
        written = super().write_predictions(outputs, path)
        return written.replace("predictions", "generated texts")
