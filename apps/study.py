"""`rnnsuite study [--quick|--full] [--out runs/study] [--only NAME ...]`: the lecture's claims about recurrent
networks as small reproducible experiments on synthetic sequences, written to `<out>/REPORT.md` with PNG charts.

Plain PyTorch loops (the experiments are about the recurrence, not the tasks) over the project's own `make_rnn` and
`run_rnn`. Every number is the mean ± std over seeds 0..n-1; the same command gives the same numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.plots import Series, line_chart
from decoders.rnn import make_rnn, run_rnn
from decoders.schedules import sampling_probability

CELLS = ("rnn", "gru", "lstm")
K = 4  # symbols of the synthetic sequences (chance accuracy 1/K)


@dataclass(frozen=True)
class Size:
    seeds: int
    hidden: int
    batch: int
    steps: int                 # training steps of each run
    lags: tuple[int, ...]      # recall lags for accuracy against lag
    grad_lag: int              # the lag of the gradient profiles
    explode_steps: int
    eval_lengths: tuple[int, ...]  # lengths a model trained on eval_lengths[0] is scored on
    pad_length: int            # padded length of the packing experiment

    def __post_init__(self) -> None:
        if self.grad_lag not in self.lags:
            raise ValueError(f"grad_lag {self.grad_lag} must be one of the lags {self.lags}")


MODES = {
    "quick": Size(seeds=3, hidden=16, batch=32, steps=120, lags=(5, 20), grad_lag=20, explode_steps=60,
                  eval_lengths=(10, 40), pad_length=16),
    "default": Size(seeds=3, hidden=32, batch=64, steps=1500, lags=(5, 10, 20, 30, 40), grad_lag=20,
                    explode_steps=300, eval_lengths=(10, 20, 50, 100, 200), pad_length=30),
    "full": Size(seeds=5, hidden=64, batch=64, steps=4000, lags=(5, 10, 20, 40, 80), grad_lag=40,
                 explode_steps=1000, eval_lengths=(10, 20, 50, 100, 200, 500), pad_length=50),
}


class StepModel(nn.Module):
    """(B, T, in_dim) steps -> (B, T, num_classes) logits of every step, over make_rnn + run_rnn."""

    def __init__(self, cell: str, in_dim: int, hidden: int, num_classes: int, num_layers: int = 1,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = make_rnn(cell, in_dim, hidden, num_layers, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out, _ = run_rnn(self.rnn, x, lengths)  # (B, T, H * directions)
        return self.head(out)


# ---- synthetic data: one-hot symbols, generated from a seeded torch.Generator

def recall_batch(B: int, T: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The copy problem with lag T: a symbol at step 0, then T-1 blank (zero) steps, and at the last step the model
    says which symbol it was. x (B, T, K), y (B,)."""
    symbols = torch.randint(K, (B,), generator=gen)
    x = torch.zeros(B, T, K)
    x[:, 0] = F.one_hot(symbols, K).float()
    return x, symbols


DELAY = 2


def delay_batch(B: int, T: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Echo the symbol DELAY steps back at every step t >= DELAY: x (B, T, K), y (B, T) with -100 (ignored) before."""
    symbols = torch.randint(K, (B, T), generator=gen)
    y = torch.full_like(symbols, -100)
    y[:, DELAY:] = symbols[:, :-DELAY]
    return F.one_hot(symbols, K).float(), y


def ahead_batch(B: int, T: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """At every step t < T - DELAY, the symbol DELAY steps ahead: x (B, T, K), y (B, T) with -100 (ignored) after."""
    symbols = torch.randint(K, (B, T), generator=gen)
    y = torch.full_like(symbols, -100)
    y[:, :-DELAY] = symbols[:, DELAY:]
    return F.one_hot(symbols, K).float(), y


def next_symbol_batch(B: int, T: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Padded sequences of lengths in [T/4, T]: at every valid step the next symbol, or K (end) at the last one.
    x (B, T, K) one-hot, zero on padding; y (B, T), -100 on padding; lengths (B,)."""
    lengths = torch.randint(max(2, T // 4), T + 1, (B,), generator=gen)
    symbols = torch.randint(K, (B, T), generator=gen)
    valid = torch.arange(T)[None] < lengths[:, None]  # (B, T)
    x = F.one_hot(symbols, K).float() * valid[..., None]
    y = torch.cat([symbols[:, 1:], symbols[:, :1]], 1)
    y[torch.arange(B), lengths - 1] = K
    return x, y.masked_fill(~valid, -100), lengths


# ---- training loops

def train(model: nn.Module, loss_fn: Callable[[], Tensor], steps: int, lr: float = 1e-2, optimizer: str = "adam",
          clip: float | None = None) -> tuple[list[float], list[float]]:
    """`steps` updates of loss_fn(); returns the loss and the gradient norm (before clipping) of every step."""
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else math.inf)
        losses.append(loss.item())
        norms.append(norm.item())
        opt.step()
    return losses, norms


def recall_loss(model: StepModel, size: Size, T: int, gen: torch.Generator) -> Callable[[], Tensor]:
    def loss() -> Tensor:
        x, y = recall_batch(size.batch, T, gen)
        return F.cross_entropy(model(x)[:, -1], y)
    return loss


@torch.no_grad()
def accuracy(logits: Tensor, y: Tensor) -> float:
    keep = y != -100
    return (logits.argmax(-1)[keep] == y[keep]).float().mean().item()


def input_gradient_profile(model: StepModel, x: Tensor, y: Tensor) -> list[float]:
    """||dL/dx_t|| for t = 0..T-1, averaged over the batch, of the loss at the last step."""
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x)[:, -1], y).backward()
    model.zero_grad(set_to_none=True)
    return x.grad.norm(dim=-1).mean(0).tolist()


# ---- statistics and formatting

def mean_std(values: list[float]) -> tuple[float, float]:
    v = torch.tensor(values, dtype=torch.float64)
    return v.mean().item(), (v.std().item() if len(values) > 1 else 0.0)


def pm(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    if not math.isfinite(m):
        return f"{m} ({sum(math.isfinite(v) for v in values)}/{len(values)} finite)"
    if abs(m) >= 1e4 or (m and abs(m) < 10 ** -digits):
        return f"{m:.2e} ± {s:.1e}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def curve(label: str, x: list[float], per_seed: list[list[float]], transform: Callable[[float], float] = float) -> Series:
    """A Series of the mean over seeds (of transform(value)) with the std as its band."""
    cols = list(zip(*[[transform(v) for v in run] for run in per_seed]))
    stats = [mean_std(list(c)) for c in cols]
    return Series(label, x, [m for m, _ in stats], [s for _, s in stats])


def log10(v: float) -> float:
    return math.log10(v) if v > 0 and math.isfinite(v) else math.nan


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


class Result:
    """One experiment's part of the report: Markdown, chart files and the raw numbers (results.json)."""

    def __init__(self, name: str, title: str, claim: str) -> None:
        self.name, self.title, self.claim = name, title, claim
        self.markdown: list[str] = []
        self.numbers: dict[str, object] = {}


# ---- the experiments

GATED = (*CELLS, "lstm-fb1")  # lstm-fb1: torch's LSTM with its forget-gate bias set to 1 (Gers et al. 2000)


def gated_model(variant: str, hidden: int) -> StepModel:
    """A recall model of one of GATED; torch orders an LSTM's gate biases (input, forget, cell, output)."""
    model = StepModel(variant.removesuffix("-fb1"), K, hidden, K)
    if variant.endswith("-fb1"):
        with torch.no_grad():
            model.rnn.bias_ih_l0[hidden:2 * hidden] = 1.0  # sigmoid(1) = 0.73 of the cell kept per step, not 0.5
    return model


def vanishing(size: Size, out: str) -> Result:
    r = Result("vanishing", "Vanishing gradients: plain RNN vs GRU vs LSTM",
               "How much the loss at the last step depends on each input step. ||dL/dx_t|| falls geometrically as t "
               "moves away from the loss; at initialisation the rate is set by the recurrent weights (a plain RNN's "
               "tanh Jacobians) or by the forget gate (an LSTM keeps sigmoid(bias) of its cell per step: 0.5 with "
               "torch's zero-centred init, 0.73 with the forget bias at 1). A symbol whose gradient has vanished at "
               "initialisation gives almost no learning signal, so accuracy falls to chance beyond some lag.")
    profiles = {when: {c: [] for c in GATED} for when in ("init", "trained")}
    acc = {c: {lag: [] for lag in size.lags} for c in GATED}
    for lag in size.lags:
        for cell in GATED:
            for seed in range(size.seeds):
                torch.manual_seed(seed)
                gen, model = torch.Generator().manual_seed(seed), gated_model(cell, size.hidden)
                probe = recall_batch(256, size.grad_lag, torch.Generator().manual_seed(10_000 + seed))
                if lag == size.grad_lag:
                    profiles["init"][cell].append(input_gradient_profile(model, *probe))
                train(model, recall_loss(model, size, lag, gen), size.steps, clip=1.0)
                if lag == size.grad_lag:
                    profiles["trained"][cell].append(input_gradient_profile(model, *probe))
                x, y = recall_batch(1000, lag, torch.Generator().manual_seed(20_000 + seed))
                acc[cell][lag].append(accuracy(model(x)[:, -1], y))
    T = size.grad_lag
    # after training a confident model's loss is flat, which scales every dL/dx_t alike: divide by the last step's
    relative = {c: [[v / p[-1] for v in p] for p in profiles["trained"][c]] for c in GATED}
    line_chart(os.path.join(out, "vanishing_grad_init.png"),
               [curve(c, list(range(T)), profiles["init"][c], log10) for c in GATED],
               f"log10 ||dL/dx_t|| at initialisation, loss at step {T - 1}", "input step t", "log10 ||dL/dx_t||")
    line_chart(os.path.join(out, "vanishing_grad_trained.png"),
               [curve(c, list(range(T)), relative[c], log10) for c in GATED],
               f"log10 ||dL/dx_t|| / ||dL/dx_{T - 1}|| after {size.steps} steps at lag {T}", "input step t",
               "log10 relative ||dL/dx_t||")
    line_chart(os.path.join(out, "vanishing_accuracy.png"),
               [curve(c, list(size.lags), [[acc[c][lag][s] for lag in size.lags] for s in range(size.seeds)])
                for c in GATED],
               f"copy accuracy against lag (chance {1 / K:.2f})", "lag T", "accuracy", y_range=(0.0, 1.02))
    ratio = {when: {c: [p[0] / p[-1] for p in profiles[when][c]] for c in GATED} for when in profiles}
    r.markdown += [
        f"Task (the copy problem): one of {K} symbols at step 0, blank steps after it, and at step T-1 the model "
        f"says which symbol it was (chance {1 / K:.2f}). Each run: {size.steps} Adam steps (lr 1e-2, gradient norm "
        f"clipped to 1, batch {size.batch}, hidden {size.hidden}); `lstm-fb1` is the LSTM with its forget-gate bias "
        f"set to 1. Gradients of the cross-entropy at step {T - 1} over a fixed batch of 256.",
        "", "![](vanishing_grad_init.png) ![](vanishing_grad_trained.png)", "",
        table(["cell", f"‖dL/dx_0‖ (T={T}), init", f"‖dL/dx_0‖ / ‖dL/dx_{T - 1}‖, init",
               f"‖dL/dx_0‖ / ‖dL/dx_{T - 1}‖, trained", f"accuracy, lag {T}"],
              [[c, pm([p[0] for p in profiles["init"][c]]), pm(ratio["init"][c]), pm(ratio["trained"][c]),
                pm(acc[c][T])] for c in GATED]),
        "", "![](vanishing_accuracy.png)", "",
        table(["cell", *[f"accuracy, lag {lag}" for lag in size.lags]],
              [[c, *[pm(acc[c][lag]) for lag in size.lags]] for c in GATED]),
    ]
    reach = {c: max([lag for lag in size.lags if mean_std(acc[c][lag])[0] >= 0.9], default=None) for c in GATED}
    r.markdown.insert(0, f"Measured: at initialisation ‖dL/dx_0‖ / ‖dL/dx_{T - 1}‖ is "
                      + ", ".join(f"{mean_std(ratio['init'][c])[0]:.1e} ({c})" for c in GATED)
                      + f"; the longest lag learnt to mean accuracy ≥ 0.9 in {size.steps} steps is "
                      + ", ".join(f"{reach[c] if reach[c] else 'none'} ({c})" for c in GATED) + ".\n")
    r.numbers = {"grad_first_step": {w: {c: [p[0] for p in profiles[w][c]] for c in GATED} for w in profiles},
                 "grad_ratio": ratio,
                 "accuracy": {c: {str(lag): v for lag, v in acc[c].items()} for c in GATED}}
    return r


EXPLODE_LR, EXPLODE_CLIP = 2.0, 1.0


def exploding(size: Size, out: str) -> Result:
    r = Result("exploding", "Exploding gradients and clipping",
               f"A plain RNN trained by SGD at a high learning rate ({EXPLODE_LR}): without clipping, a large gradient "
               f"throws the weights into a region of steep loss (tanh saturated, logits huge): the loss climbs far above "
               f"its starting ln {K} = {math.log(K):.2f} and stays there (or becomes NaN). Clipping the total norm to "
               f"{EXPLODE_CLIP} bounds every update, and the same model at the same learning rate learns.")
    lag = size.lags[0]
    runs = {name: {"loss": [], "norm": [], "acc": []} for name in ("no clipping", f"clip {EXPLODE_CLIP}")}
    for name, clip in (("no clipping", None), (f"clip {EXPLODE_CLIP}", EXPLODE_CLIP)):
        for seed in range(size.seeds):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = StepModel("rnn", K, size.hidden, K)
            losses, norms = train(model, recall_loss(model, size, lag, gen), size.explode_steps, lr=EXPLODE_LR,
                                  optimizer="sgd", clip=clip)
            x, y = recall_batch(1000, lag, torch.Generator().manual_seed(20_000 + seed))
            runs[name]["loss"].append(losses)
            runs[name]["norm"].append(norms)
            runs[name]["acc"].append(accuracy(model(x)[:, -1], y) if all(map(math.isfinite, losses)) else 0.0)
    steps = list(range(size.explode_steps))
    line_chart(os.path.join(out, "exploding_loss.png"), [curve(n, steps, v["loss"]) for n, v in runs.items()],
               f"training loss, plain RNN, SGD lr {EXPLODE_LR} (gaps: NaN/inf)", "step", "loss")
    line_chart(os.path.join(out, "exploding_grad_norm.png"), [curve(n, steps, v["norm"], log10) for n, v in runs.items()],
               "log10 total gradient norm before clipping", "step", "log10 ||grad||")
    tail = max(1, size.explode_steps // 5)
    r.markdown += [
        f"Task: recall at lag {lag}; plain RNN, hidden {size.hidden}, batch {size.batch}, {size.explode_steps} SGD "
        f"steps at lr {EXPLODE_LR}; `torch.nn.utils.clip_grad_norm_` (what `--trainer.gradient_clip_val` does; "
        f"`GradNormMonitor` logs the norm before it as `train/grad_norm`).",
        "", "![](exploding_loss.png) ![](exploding_grad_norm.png)", "",
        table(["run", "max ‖grad‖", "median ‖grad‖", f"mean loss, last {tail} steps", "non-finite losses",
               "accuracy"],
              [[n, pm([max(x) for x in v["norm"]], 1), pm([sorted(x)[len(x) // 2] for x in v["norm"]], 2),
                pm([sum(x[-tail:]) / tail for x in v["loss"]]), pm([sum(not math.isfinite(l) for l in x) for x in v["loss"]], 1),
                pm(v["acc"])] for n, v in runs.items()]),
    ]
    (a, va), (b, vb) = runs.items()
    r.markdown.insert(0, f"Measured: mean loss over the last {tail} steps {pm([sum(x[-tail:]) / tail for x in va['loss']])} "
                      f"({a}) vs {pm([sum(x[-tail:]) / tail for x in vb['loss']])} ({b}); accuracy {pm(va['acc'])} vs "
                      f"{pm(vb['acc'])}.\n")
    r.numbers = {n: {"max_norm": [max(x) for x in v["norm"]], "tail_loss": [sum(x[-tail:]) / tail for x in v["loss"]],
                     "accuracy": v["acc"]} for n, v in runs.items()}
    return r


def sharing(size: Size, out: str) -> Result:
    r = Result("sharing", "Parameter sharing over time",
               "One set of weights is applied at every step, so the parameter count does not grow with the sequence "
               "length (a feed-forward net over the flattened sequence grows linearly), and a rule learnt on short "
               f"sequences (echo the symbol {DELAY} steps back) holds on sequences many times longer.")
    lengths = [10, 20, 50, 100, 200, 500, 1000]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rnn_params = {c: count(StepModel(c, K, size.hidden, K)) for c in CELLS}
    mlp_params = [count(nn.Sequential(nn.Linear(T * K, size.hidden), nn.Linear(size.hidden, T * K))) for T in lengths]
    line_chart(os.path.join(out, "sharing_params.png"),
               [Series(f"{c} (any T)", lengths, [log10(rnn_params[c])] * len(lengths)) for c in CELLS]
               + [Series("MLP on flat seq", lengths, [log10(n) for n in mlp_params])],
               f"log10 parameters against sequence length (hidden {size.hidden})", "sequence length T", "log10 params")
    train_T, acc = size.eval_lengths[0], {c: {T: [] for T in size.eval_lengths} for c in CELLS}
    for cell in CELLS:
        for seed in range(size.seeds):
            torch.manual_seed(seed)
            gen, model = torch.Generator().manual_seed(seed), StepModel(cell, K, size.hidden, K)

            def loss() -> Tensor:
                x, y = delay_batch(size.batch, train_T, gen)
                return F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            train(model, loss, size.steps)
            for T in size.eval_lengths:
                x, y = delay_batch(200, T, torch.Generator().manual_seed(20_000 + seed))
                acc[cell][T].append(accuracy(model(x), y))
    line_chart(os.path.join(out, "sharing_length.png"),
               [curve(c, list(size.eval_lengths), [[acc[c][T][s] for T in size.eval_lengths] for s in range(size.seeds)])
                for c in CELLS],
               f"echo accuracy against length, trained on length {train_T}", "evaluation length T", "accuracy", y_range=(0.0, 1.02))
    r.markdown += [
        "", "![](sharing_params.png)", "",
        table(["model", *[f"T={T}" for T in lengths]],
              [[c, *[str(rnn_params[c])] * len(lengths)] for c in CELLS] + [["MLP over the flat sequence", *map(str, mlp_params)]]),
        "", f"Trained on length {train_T} ({size.steps} Adam steps), scored per step (t ≥ {DELAY}) on longer sequences:",
        "", "![](sharing_length.png)", "",
        table(["cell", *[f"accuracy, T={T}" + (" (trained)" if T == train_T else "") for T in size.eval_lengths]],
              [[c, *[pm(acc[c][T]) for T in size.eval_lengths]] for c in CELLS]),
    ]
    r.numbers = {"params": rnn_params, "mlp_params": dict(zip(map(str, lengths), mlp_params)),
                 "accuracy": {c: {str(T): v for T, v in acc[c].items()} for c in CELLS}}
    return r


def packing(size: Size, out: str) -> Result:
    r = Result("packing", "Padding vs packing (bidirectional RNN)",
               "Over a padded batch without packing, the backward direction reads the padding before a sequence's "
               "real end, so its outputs at valid steps differ from running the sequence alone; `run_rnn` with "
               "lengths packs the batch and matches the lone run to float precision. The forward direction is "
               "unaffected either way (padding comes after the valid steps).")
    T, cell = size.pad_length, "gru"
    drift = {m: {"forward": [], "backward": []} for m in ("padded", "packed")}
    acc = {m: [] for m in ("padded", "packed", "packed model run padded", f"padded model, batch padded to {2 * T}",
                           f"packed model, batch padded to {2 * T}")}
    for seed in range(size.seeds):
        torch.manual_seed(seed)
        model = StepModel(cell, K, size.hidden, K + 1, bidirectional=True)
        x, _, lengths = next_symbol_batch(64, T, torch.Generator().manual_seed(10_000 + seed))
        with torch.no_grad():
            H = size.hidden
            runs = {"padded": run_rnn(model.rnn, x, None)[0], "packed": run_rnn(model.rnn, x, lengths)[0]}
            for i, n in enumerate(lengths.tolist()):
                alone = model.rnn(x[i:i + 1, :n])[0][0]  # (n, 2H): the sequence with no padding at all
                for m, o in runs.items():
                    for half, sl in (("forward", slice(0, H)), ("backward", slice(H, 2 * H))):
                        drift[m][half].append(((o[i, :n, sl] - alone[:, sl]).norm() / alone[:, sl].norm()).item())
        for mode in ("padded", "packed"):
            torch.manual_seed(seed)
            gen, model = torch.Generator().manual_seed(seed), StepModel(cell, K, size.hidden, K + 1, bidirectional=True)

            def loss() -> Tensor:
                x, y, lengths = next_symbol_batch(size.batch, T, gen)
                return F.cross_entropy(model(x, lengths if mode == "packed" else None).flatten(0, 1), y.flatten())
            train(model, loss, size.steps)
            x, y, lengths = next_symbol_batch(500, T, torch.Generator().manual_seed(20_000 + seed))
            acc[mode].append(accuracy(model(x, lengths if mode == "packed" else None), y))
            if mode == "packed":
                acc["packed model run padded"].append(accuracy(model(x), y))
            # the same samples in a batch whose longest member is 2T: more padding behind each sequence
            x2, y2 = F.pad(x, (0, 0, 0, T)), F.pad(y, (0, T), value=-100)
            acc[f"{mode} model, batch padded to {2 * T}"].append(
                accuracy(model(x2, lengths if mode == "packed" else None), y2))
    per_seed = lambda vals: [sum(vals[i::size.seeds]) / len(vals[i::size.seeds]) for i in range(size.seeds)]  # noqa: E731
    r.markdown += [
        f"A bidirectional {cell.upper()} (hidden {size.hidden}) over batches padded to {T} steps, lengths uniform in "
        f"[{max(2, T // 4)}, {T}]. Output change: ‖out − out_alone‖ / ‖out_alone‖ over a sample's valid steps, "
        f"where out_alone runs that sample with no padding (64 samples per seed, at initialisation).",
        "", table(["batch run as", "forward half", "backward half"],
                  [[m, pm(per_seed(d["forward"]), 4), pm(per_seed(d["backward"]), 4)] for m, d in drift.items()]),
        "", f"Task: at every valid step, the next symbol, or 'end' at the last one (needs the backward direction to "
        f"know where the sequence ends). {size.steps} Adam steps; accuracy over valid steps:",
        "", table(["trained and run", "accuracy"], [[m, pm(v)] for m, v in acc.items()]),
        "", "Trained on padded batches, the network learns to discount the padding it was trained with, but its "
        "predictions then depend on how much padding a batch has, i.e. on the other samples in the batch; packed, "
        "a sample's outputs are its own.",
    ]
    r.numbers = {"drift": {m: {h: per_seed(v) for h, v in d.items()} for m, d in drift.items()}, "accuracy": acc}
    return r


def depth(size: Size, out: str) -> Result:
    r = Result("depth", "Bidirectional vs unidirectional, and stacking depth 1-3",
               f"A step's label is the symbol {DELAY} steps ahead: a unidirectional RNN has not read it yet and stays "
               f"at chance ({1 / K:.2f}) however deep it is; a bidirectional one reads it on its backward pass. Depth "
               "multiplies the parameters and the time per step; what it buys at a fixed number of steps is measured.")
    T, cell, configs = size.pad_length, "gru", [(d, n) for d in (False, True) for n in (1, 2, 3)]
    acc, params, seconds = {c: [] for c in configs}, {}, {c: [] for c in configs}
    for bidirectional, layers in configs:
        for seed in range(size.seeds):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = StepModel(cell, K, size.hidden, K, num_layers=layers, bidirectional=bidirectional)
            params[bidirectional, layers] = sum(p.numel() for p in model.parameters())

            def loss() -> Tensor:
                x, y = ahead_batch(size.batch, T, gen)
                return F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            start = time.perf_counter()
            train(model, loss, size.steps // 2, clip=1.0)
            seconds[bidirectional, layers].append(time.perf_counter() - start)
            x, y = ahead_batch(500, T, torch.Generator().manual_seed(20_000 + seed))
            acc[bidirectional, layers].append(accuracy(model(x), y))
    name = lambda c: f"{'bidirectional' if c[0] else 'unidirectional'}, {c[1]} layer{'s' if c[1] > 1 else ''}"  # noqa: E731
    line_chart(os.path.join(out, "depth_accuracy.png"),
               [curve("bidirectional" if d else "unidirectional", [1, 2, 3],
                      [[acc[d, n][s] for n in (1, 2, 3)] for s in range(size.seeds)]) for d in (False, True)],
               f"accuracy of x[t+{DELAY}] against depth (chance {1 / K:.2f})", "layers",
               "accuracy", y_range=(0.0, 1.02))
    r.markdown += [
        f"{cell.upper()}, hidden {size.hidden} per direction, sequences of {T}, {size.steps // 2} Adam steps (lr "
        "1e-2, clipped to 1); accuracy over the steps with a label; training time on this machine's CPU (1 thread).",
        "", "![](depth_accuracy.png)", "",
        table(["model", "parameters", "accuracy", "training seconds"],
              [[name(c), str(params[c]), pm(acc[c]), pm(seconds[c], 2)] for c in configs]),
    ]
    r.markdown.insert(0, "Measured: accuracy " + ", ".join(f"{mean_std(acc[c])[0]:.3f} ({name(c)})" for c in configs)
                      + ".\n")
    r.numbers = {"accuracy": {name(c): acc[c] for c in configs}, "params": {name(c): params[c] for c in configs}}
    return r


OBSERVED, HORIZON, SAMPLING_MAX = 10, 30, 0.75
SCHEDULES = ("teacher forcing", "linear", "inverse_sigmoid", "exponential")


def waves(B: int, gen: torch.Generator) -> Tensor:
    """(B, OBSERVED + HORIZON, 1): tanh of a sum of two sines of random frequency, phase and amplitude."""
    t = torch.arange(OBSERVED + HORIZON).float()
    freq = 0.15 + 0.25 * torch.rand(B, 2, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(B, 2, 1, generator=gen)
    amp = 0.5 + 0.5 * torch.rand(B, 2, 1, generator=gen)
    return torch.tanh(0.75 * (amp * torch.sin(freq * t + phase)).sum(1))[..., None]


class Forecaster(nn.Module):
    """A GRU cell reading the previous value and predicting the next. After the observed steps, each input is the
    truth (teacher forcing) or, with probability `p_own`, the model's own previous prediction (scheduled sampling,
    detached as in Bengio et al. 2015); p_own=1 is free running, how it is evaluated."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.cell, self.out = nn.GRUCell(1, hidden), nn.Linear(hidden, 1)

    def forward(self, seq: Tensor, p_own: float, gen: torch.Generator) -> Tensor:
        B, T, _ = seq.shape
        h, x, preds = seq.new_zeros(B, self.cell.hidden_size), seq[:, 0], []
        for t in range(T - 1):
            h = self.cell(x, h)
            preds.append(self.out(h))
            x = seq[:, t + 1]
            if t + 1 >= OBSERVED and p_own > 0:
                own = (torch.rand(B, 1, generator=gen) < p_own).float()
                x = own * preds[-1].detach() + (1 - own) * x
        return torch.stack(preds, 1)  # (B, T - 1, 1): the prediction of steps 1..T-1


def exposure(size: Size, out: str) -> Result:
    r = Result("exposure", "Teacher forcing vs scheduled sampling (exposure bias)",
               "A model trained with teacher forcing only ever sees true inputs; run free, it reads its own slightly "
               "wrong predictions, a distribution it never trained on, and its errors compound over the rollout. "
               "Scheduled sampling feeds it its own predictions during training with a probability that grows "
               f"(decoders/schedules.py, the schedules `--model.scheduled_sampling` uses; here up to {SAMPLING_MAX}). "
               "The chart shows the free-running error at each rollout step.")
    errors: dict[str, list[list[float]]] = {s: [] for s in SCHEDULES}
    for schedule in SCHEDULES:
        for seed in range(size.seeds):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = Forecaster(size.hidden)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            for step in range(size.steps):
                p = 0.0 if schedule == "teacher forcing" else sampling_probability(
                    step / size.steps, schedule, 0.0, 1.0, SAMPLING_MAX)
                seq = waves(size.batch, gen)
                loss = F.mse_loss(model(seq, p, gen), seq[:, 1:])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                seq = waves(1000, torch.Generator().manual_seed(30_000 + seed))
                pred = model(seq, 1.0, torch.Generator().manual_seed(seed))
                errors[schedule].append(((pred - seq[:, 1:]) ** 2).mean((0, 2))[OBSERVED - 1:].tolist())
    steps = list(range(1, HORIZON + 1))
    line_chart(os.path.join(out, "exposure_error.png"), [curve(s, steps, e) for s, e in errors.items()],
               f"free-running MSE after {OBSERVED} observed steps", "rollout step", "MSE")
    late = slice(HORIZON - 10, HORIZON)
    mean_of = lambda e, part: [sum(run[part]) / len(run[part]) for run in e]  # noqa: E731
    r.markdown += [
        f"Task: {OBSERVED} observed values of tanh(a sum of two random sines), then {HORIZON} predicted free-running; "
        f"a GRU cell of {size.hidden}, batch {size.batch}, {size.steps} Adam steps, test on 1,000 new sequences.",
        "", "![](exposure_error.png)", "",
        table(["training", "MSE step 1", "MSE step 10", f"MSE steps {late.start + 1}-{late.stop}", "MSE all steps"],
              [[s, pm([run[0] for run in e], 4), pm([run[9] for run in e], 4), pm(mean_of(e, late), 4),
                pm(mean_of(e, slice(None)), 4)] for s, e in errors.items()]),
    ]
    best = min(errors, key=lambda s: mean_std(mean_of(errors[s], late))[0])
    r.markdown.insert(0, f"Measured: the lowest error over the last 10 rollout steps comes from {best} "
                      f"({pm(mean_of(errors[best], late), 4)}; teacher forcing only: "
                      f"{pm(mean_of(errors['teacher forcing'], late), 4)}).\n")
    r.numbers = {s: {"per_step": e} for s, e in errors.items()}
    return r


from apps.study_tasks import exposure_frames  # noqa: E402 - it builds on the helpers above

EXPERIMENTS: dict[str, Callable[[Size, str], Result]] = {
    "vanishing": vanishing, "exploding": exploding, "exposure": exposure, "exposure_frames": exposure_frames,
    "sharing": sharing, "packing": packing, "depth": depth,
}


def log_to_wandb(out: str, mode: str, results: list[Result], seconds: dict[str, float]) -> str:
    """Every chart of the report as a wandb image (`study/<experiment>/<chart>`) and each experiment's claim and
    tables as text, in an offline run under `<out>/wandb` (`wandb sync` uploads it); returns the run folder."""
    import html
    import re

    try:
        import wandb
    except ImportError:
        raise SystemExit("--wandb needs the wandb package: pip install wandb (or make install)") from None
    run = wandb.init(project="rnnsuite", name=f"study-{mode}", dir=out, mode="offline", job_type="study",
                     config={"mode": mode, "size": asdict(MODES[mode])}, reinit="finish_previous")
    try:
        for r in results:
            charts = re.findall(r"!\[\]\(([^)]+\.png)\)", "\n".join(r.markdown))
            run.log({f"study/{r.name}/{os.path.splitext(c)[0]}": wandb.Image(os.path.join(out, c)) for c in charts}
                    | {f"study/{r.name}/report": wandb.Html("<pre>" + html.escape("\n\n".join([r.claim, *r.markdown])) + "</pre>"),
                       f"study/{r.name}/seconds": seconds[r.name]})
        return run.dir.removesuffix("/files")
    finally:
        run.finish()


def write_report(out: str, mode: str, results: list[Result], seconds: dict[str, float]) -> str:
    flag = "" if mode == "default" else f" --{mode}"
    lines = [f"# rnnsuite study ({mode})", "",
             f"Every number is the mean ± std over {MODES[mode].seeds} seeds (0..{MODES[mode].seeds - 1}); sizes: "
             f"`{asdict(MODES[mode])}`. Rerun all of it with `rnnsuite study{flag} --out {out}`.", ""]
    for r in results:
        lines += [f"## {r.title}", "", r.claim, "",
                  f"Rerun: `rnnsuite study{flag} --out {out} --only {r.name}` ({seconds[r.name]:.1f} s here).", "",
                  *r.markdown, ""]
    path = os.path.join(out, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"mode": mode, "size": asdict(MODES[mode]), "seconds": seconds,
                   **{r.name: r.numbers for r in results}}, f, indent=1)
    return path


def main(args: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="rnnsuite study", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="mode", help="tiny sizes, under a minute (the default sizes: about 15-20 min on 2 cores)")
    group.add_argument("--full", action="store_const", const="full", dest="mode", help="5 seeds, hidden 64, 4000 steps, lags to 80 (estimated 1.5-2 h on 2 cores)")
    parser.add_argument("--out", default="runs/study", help="folder of REPORT.md, results.json and the charts")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), help="run these experiments alone (REPORT.md then holds only them)")
    parser.add_argument("--wandb", action="store_true", help="also log the charts and tables to Weights & Biases (an offline run under <out>/wandb; `wandb sync` uploads it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models; numbers reproduce at a fixed count)")
    opts = parser.parse_args(args)
    mode = opts.mode or "default"
    os.makedirs(opts.out, exist_ok=True)
    torch.set_num_threads(opts.threads)
    results, seconds = [], {}
    for name in opts.only or EXPERIMENTS:
        start = time.perf_counter()
        results.append(EXPERIMENTS[name](MODES[mode], opts.out))
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s", flush=True)
    path = write_report(opts.out, mode, results, seconds)
    print(f"report: {path}")
    if opts.wandb:
        folder = log_to_wandb(opts.out, mode, results, seconds)
        print(f"wandb run: {folder} (upload it with: wandb sync {folder})")
    return path


if __name__ == "__main__":
    main()
