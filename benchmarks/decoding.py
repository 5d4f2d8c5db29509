"""Decoder speed, as ratios measured in one run (median of interleaved repeats):

1. teacher forcing: one fused nn.LSTM/nn.GRU call over the sequence vs a Python loop over nn.LSTMCell/nn.GRUCell
   steps, equal sizes and weights, forward + backward (goal >= 3x). The sizes are read from each task's default
   model (configs/<task>.yaml) by hooking its recurrent layer on a real batch: input size, hidden size, layers,
   direction, batch and (longest) length. A second baseline is the best a Python loop can do: the input
   projection of all steps hoisted into one matrix product, only h @ W_hh per step;
2. beam search: all images and beams as one batch vs one image at a time (goal >= 5x).

Run: `nice -n 5 .venv/bin/python benchmarks/decoding.py [--repeats 5] [--threads 1]`.
"""
from __future__ import annotations

import statistics
from typing import NamedTuple

import torch
from torch import Tensor, nn

from common import TASKS, base_parser, build, first_batches, interleaved, machine, median_ratio, print_table, setup, \
    timed
from decoders.caption import CaptionDecoder
from decoders.search import beam_search
from encoders.base import Encoded


class RNNShape(NamedTuple):
    mode: str  # LSTM | GRU
    batch: int
    length: int
    input_size: int
    hidden: int
    layers: int
    bidirectional: bool

    def describe(self) -> str:
        return (f"{self.mode} {self.input_size}->{self.hidden}{f' x{self.layers}' if self.layers > 1 else ''}"
                f"{' bi' if self.bidirectional else ''}")


def default_shapes(quick: bool) -> list[tuple[str, list[RNNShape]]]:
    """Every fused recurrent call of each task's default model on a real training batch (the phoneme model's
    bidirectional stack is four one-direction calls), as (config, shapes)."""
    found = []
    for task in TASKS:
        model, datamodule, _ = build(task, quick=quick)
        shapes: list[RNNShape] = []

        def hook(rnn, args):
            x = args[0]
            if isinstance(x, nn.utils.rnn.PackedSequence):  # the longest sequence, the full batch
                batch, length = int(x.batch_sizes[0]), len(x.batch_sizes)
            else:
                batch, length = x.shape[:2] if rnn.batch_first else x.shape[1::-1]
            shapes.append(RNNShape(rnn.mode, int(batch), int(length), rnn.input_size, rnn.hidden_size,
                                   rnn.num_layers, rnn.bidirectional))

        handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, (nn.LSTM, nn.GRU))]
        if handles:  # frames has a ConvLSTM instead: see convlstm.py
            model.train().compute_loss(first_batches(datamodule, 1)[0], "train")
            found.append((f"{task}.yaml", shapes))
        for handle in handles:
            handle.remove()
    return found


def cell_loop(cells: list[nn.Module], x: Tensor, shape: RNNShape) -> Tensor:
    """The stack as a Python loop of LSTMCell/GRUCell steps; cells[layer * dirs + d]."""
    dirs = 2 if shape.bidirectional else 1
    for layer in range(shape.layers):
        outs = []
        for d in range(dirs):
            cell = cells[layer * dirs + d]
            h = c = x.new_zeros(x.shape[0], shape.hidden)
            hs = [None] * x.shape[1]
            for t in range(x.shape[1]) if d == 0 else reversed(range(x.shape[1])):
                if shape.mode == "LSTM":
                    h, c = cell(x[:, t], (h, c))
                else:
                    h = cell(x[:, t], h)
                hs[t] = h
            outs.append(torch.stack(hs, 1))
        x = torch.cat(outs, -1)
    return x


def hoisted_loop(fused: nn.RNNBase, x: Tensor, shape: RNNShape) -> Tensor:
    """A loop with the input projection of all steps done in one matrix product (fused's own weights)."""
    dirs = 2 if shape.bidirectional else 1
    for layer in range(shape.layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(fused, "weight_ih" + sfx), getattr(fused, "weight_hh" + sfx)
            b_ih, b_hh = getattr(fused, "bias_ih" + sfx), getattr(fused, "bias_hh" + sfx)
            B, T, _ = x.shape
            gx = torch.addmm(b_ih, x.flatten(0, 1), w_ih.t()).view(B, T, -1)  # (B, T, gates * hidden), one product
            h = c = x.new_zeros(B, shape.hidden)
            hs = [None] * T
            for t in range(T) if d == 0 else reversed(range(T)):
                gh = torch.addmm(b_hh, h, w_hh.t())  # (B, gates * hidden): the only product per step
                if shape.mode == "LSTM":
                    i, f, g, o = (gx[:, t] + gh).chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    xr, xz, xn = gx[:, t].chunk(3, 1)
                    hr, hz, hn = gh.chunk(3, 1)
                    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                    h = (1 - z) * torch.tanh(xn + r * hn) + z * h
                hs[t] = h
            outs.append(torch.stack(hs, 1))
        x = torch.cat(outs, -1)
    return x


def _modules(shape: RNNShape) -> tuple[nn.RNNBase, list[nn.Module]]:
    """A fused layer and per-step cells holding the same weights."""
    rnn_cls, cell_cls = (nn.LSTM, nn.LSTMCell) if shape.mode == "LSTM" else (nn.GRU, nn.GRUCell)
    fused = rnn_cls(shape.input_size, shape.hidden, shape.layers, batch_first=True, bidirectional=shape.bidirectional)
    dirs = 2 if shape.bidirectional else 1
    cells = []
    for layer in range(shape.layers):
        for d in range(dirs):
            cell = cell_cls(shape.input_size if layer == 0 else shape.hidden * dirs, shape.hidden)
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).data.copy_(getattr(fused, name + sfx))
            cells.append(cell)
    return fused, cells


def teacher_forcing(source: str, shapes: list[RNNShape], repeats: int) -> list:
    """Forward + backward of all of a model's recurrent calls, each in its three forms."""
    torch.manual_seed(0)
    parts = [(s, *_modules(s), torch.randn(s.batch, s.length, s.input_size)) for s in shapes]
    with torch.no_grad():
        err = max(max((cell_loop(cells, x, s) - fused(x)[0]).abs().max().item(),
                      (hoisted_loop(fused, x, s) - fused(x)[0]).abs().max().item()) for s, fused, cells, x in parts)
    if err > 1e-4:
        raise AssertionError(f"{source}: the loops disagree with the fused layers by {err:g}")
    forms = {
        "fused": lambda: [fused(x)[0] for _, fused, _, x in parts],
        "cells": lambda: [cell_loop(cells, x, s) for s, _, cells, x in parts],
        "hoisted": lambda: [hoisted_loop(fused, x, s) for s, fused, _, x in parts],
    }

    def bench(form):
        def run():
            sum(out.sum() for out in form()).backward()
        run()  # warm-up
        return lambda: timed(run)

    times = interleaved({name: bench(form) for name, form in forms.items()}, repeats)
    counts: dict[str, int] = {}
    for s in shapes:
        counts[s.describe()] = counts.get(s.describe(), 0) + 1
    desc = " + ".join(f"{n} x {d}" if n > 1 else d for d, n in counts.items()) + f", B{shapes[0].batch} T{shapes[0].length}"
    speedup = median_ratio(times["cells"], times["fused"])
    return [source, desc, statistics.median(times["cells"]) * 1e3, statistics.median(times["hoisted"]) * 1e3,
            statistics.median(times["fused"]) * 1e3, speedup, median_ratio(times["hoisted"], times["fused"]),
            "yes" if speedup >= 3 else "no"]


@torch.no_grad()
def beams(batch: int, beam: int, length: int, repeats: int) -> list:
    """The captioning default decoder (embed 128, hidden 256, 256-d image vector)."""
    torch.manual_seed(0)
    decoder = CaptionDecoder(256, 40, embed_dim=128, hidden_dim=256).eval()
    encoded = Encoded(torch.randn(batch, 1, 256), None)

    def batched():
        return timed(lambda: beam_search(decoder, encoded, 1, 2, length, beam_size=beam))

    def one_by_one():
        return timed(lambda: [beam_search(decoder, Encoded(encoded.seq[i: i + 1], None), 1, 2, length, beam_size=beam)
                              for i in range(batch)])

    batched(), one_by_one()  # warm-up
    times = interleaved({"batched": batched, "single": one_by_one}, repeats)
    ratio = median_ratio(times["single"], times["batched"])
    return [f"beam {beam}, {batch} images, up to {length} tokens", statistics.median(times["single"]) * 1e3,
            statistics.median(times["batched"]) * 1e3, ratio, "yes" if ratio >= 5 else "no"]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--batch", type=int, default=64, help="beam search: images")
    parser.add_argument("--length", type=int, default=20, help="beam search: max caption length (the config's)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.batch, args.length, args.repeats = 4, 4, 1
    models = default_shapes(args.quick)
    # the size measured before this benchmark read the configs (2.34x then), kept for comparison
    models.append(("earlier fixed size", [RNNShape("LSTM", 64, 16, 256, 256, 1, False)]))
    if args.quick:
        models = [(m, [s._replace(batch=min(s.batch, 4), length=min(s.length, 4)) for s in ss]) for m, ss in models]
    rows = [teacher_forcing(source, shapes, args.repeats) for source, shapes in models]
    print_table(f"Teacher forcing, forward + backward: fused nn.LSTM/GRU vs Python loops ({machine()}); speed-up = "
                f"median over {args.repeats} interleaved repeats of loop time / fused time",
                ["sizes from", "recurrent layer", "cell loop ms", "hoisted loop ms", "fused ms", "speed-up vs cells",
                 "speed-up vs hoisted", ">= 3x"], rows)
    print_table(f"Beam search, captioning decoder ({machine()}); speed-up = median over {args.repeats} interleaved "
                "repeats of one-at-a-time / batched", ["search", "one at a time ms", "batched ms", "speed-up", ">= 5x"],
                [beams(args.batch, args.beam, args.length, args.repeats)])


if __name__ == "__main__":
    main()
