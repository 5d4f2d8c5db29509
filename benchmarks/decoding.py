"""Decoder speed, as ratios measured in one run (median of repeats):

1. teacher forcing: one fused nn.LSTM call over the caption vs a Python loop over nn.LSTMCell steps, same sizes,
   forward + backward (goal >= 3x);
2. beam search: all images and beams as one batch vs one image at a time (goal >= 5x).

Run: `.venv/bin/python benchmarks/decoding.py [--batch 64 --length 16 --repeats 5]`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from decoders.caption import CaptionDecoder
from decoders.search import beam_search
from encoders.base import Encoded


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def teacher_forcing(batch: int, length: int, embed: int, hidden: int, repeats: int) -> tuple[float, float]:
    x = torch.randn(batch, length, embed)
    fused = nn.LSTM(embed, hidden, batch_first=True)
    cell = nn.LSTMCell(embed, hidden)

    def run_fused():
        out, _ = fused(x)
        out.sum().backward()

    def run_cell():
        h = c = torch.zeros(batch, hidden)
        outs = []
        for t in range(length):
            h, c = cell(x[:, t], (h, c))
            outs.append(h)
        torch.stack(outs, 1).sum().backward()

    return timed(run_fused, repeats), timed(run_cell, repeats)


@torch.no_grad()
def beams(batch: int, beam: int, length: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    decoder = CaptionDecoder(256, 40, embed_dim=128, hidden_dim=256).eval()
    encoded = Encoded(torch.randn(batch, 1, 256), None)

    def batched():
        beam_search(decoder, encoded, 1, 2, length, beam_size=beam)

    def one_by_one():
        for i in range(batch):
            beam_search(decoder, Encoded(encoded.seq[i : i + 1], None), 1, 2, length, beam_size=beam)

    return timed(batched, repeats), timed(one_by_one, max(1, repeats // 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, length {args.length}")
    print(f"{'measurement':<44}{'baseline ms':>12}{'rnnsuite ms':>12}{'speed-up':>10}")
    fused, cell = teacher_forcing(args.batch, args.length, 256, 256, args.repeats)
    print(f"{'teacher forcing: LSTMCell loop -> fused LSTM':<44}{cell * 1e3:>12.1f}{fused * 1e3:>12.1f}{cell / fused:>10.2f}")
    batched, single = beams(args.batch, args.beam, args.length, args.repeats)
    print(f"{f'beam {args.beam}: one image at a time -> batched':<44}{single * 1e3:>12.1f}{batched * 1e3:>12.1f}"
          f"{single / batched:>10.2f}")


if __name__ == "__main__":
    main()
