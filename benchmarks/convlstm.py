"""ConvLSTM step: rnnsuite's cell (ONE convolution over [x, h] for all four gates, decoders/convlstm.py) vs cells
that convolve each gate separately, with the same weights (outputs checked equal), forward + backward over a
sequence, the way the forecaster steps through time.

Baselines, written here: "4 convs" = one convolution over [x, h] per gate; "8 convs" = the paper's form
(Shi et al. 2015), W_x * x + W_h * h per gate. Sizes: the default config (configs/frames.yaml: 64 x 64 frames
folded 4 x 4 to a 16 x 16 grid, embed 16, hidden 32, kernel 3, batch 16, 19 steps) and the forecaster's defaults.

Second table: the forecaster's recurrent cores (`RECURRENT_CORES`: ConvLSTM, PredRNN's ST-LSTM, PredRNN++'s causal
LSTM + gradient highway) at equal sizes (two layers of the frames config's width: PredRNN++ needs two), forward +
backward over a sequence, as ratios against ConvLSTM measured in the same run; PredRNN also with PredRNN-V2's
decoupling loss collected (configs/frames_predrnn.yaml).
Run: `nice -n 5 .venv/bin/python benchmarks/convlstm.py [--repeats 7]`.
"""
from __future__ import annotations

import statistics

import torch
from torch import Tensor, nn

from common import base_parser, interleaved, machine, median_ratio, print_table, setup, timed
from decoders.convlstm import RECURRENT_CORES, ConvLSTMCell, PredRNN


class PerGateConvLSTMCell(nn.Module):
    """The same cell with one convolution per gate over [x, h] (split_input=False), or two, over x and over h."""

    def __init__(self, fused: ConvLSTMCell, split_input: bool) -> None:
        super().__init__()
        conv, hidden = fused.conv, fused.hidden_channels
        in_channels, k = conv.in_channels - hidden, conv.kernel_size[0]
        self.hidden_channels, self.split_input = hidden, split_input
        weights, biases = conv.weight.detach().chunk(4, dim=0), conv.bias.detach().chunk(4, dim=0)  # i, f, g, o
        self.gates = nn.ModuleList()
        for w, b in zip(weights, biases):
            if split_input:
                wx, wh = nn.Conv2d(in_channels, hidden, k, padding=k // 2), nn.Conv2d(hidden, hidden, k, padding=k // 2, bias=False)
                wx.weight.data.copy_(w[:, :in_channels]); wx.bias.data.copy_(b); wh.weight.data.copy_(w[:, in_channels:])
                self.gates.append(nn.ModuleList([wx, wh]))
            else:
                g = nn.Conv2d(conv.in_channels, hidden, k, padding=k // 2)
                g.weight.data.copy_(w); g.bias.data.copy_(b)
                self.gates.append(g)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        if self.split_input:
            i, f, g, o = (wx(x) + wh(h) for wx, wh in self.gates)
        else:
            xh = torch.cat([x, h], dim=1)
            i, f, g, o = (gate(xh) for gate in self.gates)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def unroll(cell: nn.Module, x: Tensor) -> Tensor:
    """x (B, T, C, h, w) -> stacked h (B, T, hidden, h, w); zero initial state."""
    B, T, _, H, W = x.shape
    h = c = x.new_zeros(B, cell.hidden_channels, H, W)
    outs = []
    for t in range(T):
        h, c = cell(x[:, t], (h, c))
        outs.append(h)
    return torch.stack(outs, 1)


def measure(name: str, batch: int, steps: int, in_ch: int, hidden: int, grid: int, repeats: int) -> list:
    torch.manual_seed(0)
    fused = ConvLSTMCell(in_ch, hidden, 3)
    cells = {"one conv (rnnsuite)": fused, "4 convs, one per gate": PerGateConvLSTMCell(fused, False),
             "8 convs, x and h per gate": PerGateConvLSTMCell(fused, True)}
    x = torch.randn(batch, steps, in_ch, grid, grid)
    with torch.no_grad():
        ref = unroll(fused, x)
        err = max((unroll(c, x) - ref).abs().max().item() for c in cells.values())
    if err > 1e-4:
        raise AssertionError(f"per-gate cells disagree with ConvLSTMCell by {err:g}")

    def step(cell):
        def run():
            unroll(cell, x).square().mean().backward()
        return lambda: timed(run)

    for cell in cells.values():
        step(cell)()  # warm-up
    times = interleaved({n: step(c) for n, c in cells.items()}, repeats)
    base = times["one conv (rnnsuite)"]
    sizes = f"B{batch} T{steps} {in_ch}->{hidden} {grid}x{grid}"
    return [[name, sizes, n, statistics.median(t) * 1e3, median_ratio(t, base)] for n, t in times.items()] + [
        [name, sizes, "max abs output difference", f"{err:.1e}", ""]]


def measure_cores(name: str, batch: int, steps: int, in_ch: int, hidden: list[int], grid: int, repeats: int) -> list:
    """Each recurrent core, forward + backward over a sequence (+ the decoupling loss where collected)."""
    torch.manual_seed(0)
    cores = {cell: core(in_ch, hidden, 3) for cell, core in RECURRENT_CORES.items()}
    cores["predrnn + decoupling loss"] = decoupled = PredRNN(in_ch, hidden, 3)
    decoupled.collect_decoupling = True
    x = torch.randn(batch, steps, in_ch, grid, grid)

    def step(core):
        def run():
            loss = core(x)[0].square().mean()
            extra = core.take_decoupling_loss() if isinstance(core, PredRNN) else None
            (loss if extra is None else loss + extra).backward()
        return lambda: timed(run)

    for core in cores.values():
        step(core)()  # warm-up
    times = interleaved({n: step(c) for n, c in cores.items()}, repeats)
    sizes = f"B{batch} T{steps} {in_ch}->{hidden} {grid}x{grid}"
    return [[name, sizes, n, sum(p.numel() for p in cores[n].parameters()), statistics.median(t) * 1e3,
             median_ratio(t, times["convlstm"])] for n, t in times.items()]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    setup(args)
    configs = [("configs/frames.yaml", 16, 19, 16, 32, 16), ("forecaster defaults", 16, 19, 64, 64, 16)]
    core_configs = [("configs/frames.yaml width, 2 layers", 16, 19, 16, [32, 32], 16)]
    if args.quick:
        args.repeats, configs, core_configs = 1, [("tiny", 2, 3, 4, 8, 8)], [("tiny", 2, 3, 4, [8, 8], 8)]
    rows = [row for c in configs for row in measure(*c, repeats=args.repeats)]
    print_table(f"ConvLSTM forward + backward over a sequence ({machine()}); ratio = median over {args.repeats} "
                "interleaved repeats of variant / one conv (> 1: slower than rnnsuite's cell)",
                ["sizes from", "shape", "cell", "ms (median)", "ratio"], rows)
    rows = [row for c in core_configs for row in measure_cores(*c, repeats=args.repeats)]
    print_table(f"Recurrent cores forward + backward over a sequence ({machine()}); ratio = median over {args.repeats} "
                "interleaved repeats of core / ConvLSTM at the same sizes (> 1: slower than ConvLSTM)",
                ["sizes from", "shape", "core", "parameters", "ms (median)", "ratio"], rows)


if __name__ == "__main__":
    main()
