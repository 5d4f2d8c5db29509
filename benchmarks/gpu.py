"""Training speed on an accelerator, every row a ratio against fp32 eager measured in the same run (issue #20).

For each registered task at realistic sizes (captioning: 224 px, pretrained EfficientNet + LSTM, batch 64;
activity: 16 frames of 112 px; phonemes: batch 32 of the generated 1-3 s utterances; frames: 20 x 64 x 64,
batch 16; charlm and sentiment at their defaults when registered): training samples/s of the task's own
`compute_loss` + backward + AdamW step, in fp32, bf16 autocast, channels_last, torch.compile of the module that
does most of the work, and both; peak device memory; the share of the device's bf16 matmul rate (measured here
on a large matmul) that the step's FLOPs (torch.utils.flop_counter) reach; the datamodule's loading rate at its
default num_workers against the fp32 step's rate. Then cuDNN's fused LSTM against a per-step LSTMCell loop at the
phoneme decoder's size.

    python benchmarks/gpu.py                 # on the device: realistic sizes
    python benchmarks/gpu.py --quick         # tiny sizes on whatever is here (what the test suite runs, on CPU)
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import common
from common import REGISTRY, base_parser, build, first_batches, fresh, print_table, samples_in, setup
from options import COMPILE_PART

REALISTIC = {
    "captioning": ["--config", str(common.CONFIGS / "captioning_pretrained.yaml"), "--model.cache_features", "false",
                   "--data.batch_size", "64"],
    "activity": ["--data.num_frames", "16", "--data.image_size", "112", "--data.num_train_clips", "512"],
    "phonemes": ["--data.batch_size", "32", "--data.num_train_utterances", "512"],
    "frames": ["--data.batch_size", "16"],
}


def to_device(batch, device: torch.device):
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return batch._replace(**{k: v.to(device, non_blocking=True) for k, v in zip(batch._fields, batch)
                                 if isinstance(v, torch.Tensor)})
    return batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Variant:
    def __init__(self, template, device, bf16=False, channels_last=False, compile_part=""):
        self.model = fresh(template).to(device).train()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile_part:
            parent_name, _, child = compile_part.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, torch.compile(getattr(parent, child)))
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.device, self.bf16 = device, bf16

    def step(self, batch) -> None:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            loss, _ = self.model.compute_loss(batch, "train")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def seconds_per_step(self, batches) -> float:
        sync(self.device)
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        sync(self.device)
        return (time.perf_counter() - start) / len(batches)


def matmul_rate(device: torch.device, quick: bool) -> float:
    """FLOP/s of a large bf16 matmul here: the achievable peak the steps are compared with."""
    n = 512 if quick else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    sync(device)
    start, reps = time.perf_counter(), 3 if quick else 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def task_rows(task: str, device: torch.device, quick: bool, repeats: int, peak: float) -> list[list]:
    template, datamodule, _ = build(task, [] if quick else REALISTIC.get(task, []), quick=quick)
    batches = [to_device(b, device) for b in first_batches(datamodule, 4 if quick else 12)]
    samples = statistics.mean(samples_in(b) for b in batches)
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start = time.perf_counter()
    loaded = sum(samples_in(b) for b in itertools.islice(loader, 4 if quick else 20))
    data_rate = loaded / (time.perf_counter() - start)
    variants = {"fp32 eager": dict(), "bf16 autocast": dict(bf16=True), "channels_last": dict(channels_last=True)}
    if task in COMPILE_PART and not quick:  # compiling takes minutes on a CPU: the quick run leaves it out
        variants |= {f"torch.compile({COMPILE_PART[task]})": dict(compile_part=COMPILE_PART[task]),
                     "bf16 + channels_last + compile": dict(bf16=True, channels_last=True, compile_part=COMPILE_PART[task])}
    rows, base = [], None
    for name, options in variants.items():
        try:
            variant = Variant(template, device, **options)
            variant.seconds_per_step(batches[:2])  # warm-up (and compilation)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with FlopCounterMode(display=False) as flops:
                variant.step(batches[0])
            seconds = statistics.median(variant.seconds_per_step(batches) for _ in range(repeats))
        except Exception as err:  # an option that fails here is a result, not a crash
            rows.append([task, name, "-", "-", "-", "-", f"failed: {type(err).__name__}: {str(err)[:80]}"])
            continue
        base = base or seconds
        memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.type == "cuda" else "-"
        rows.append([task, name, samples / seconds, base / seconds, memory,
                     flops.get_total_flops() / seconds / peak, f"data {data_rate / (samples / base):.2f}x the fp32 step's rate"])
    return rows


def rnn_rows(device: torch.device, quick: bool, repeats: int) -> list[list]:
    """cuDNN/MKL fused nn.LSTM vs an nn.LSTMCell loop with the same weights, forward + backward."""
    B, T, D, H = (4, 20, 16, 16) if quick else (32, 150, 192, 192)
    fused = torch.nn.LSTM(D, H, batch_first=True).to(device)
    cell = torch.nn.LSTMCell(D, H).to(device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(fused, f"{name}_l0"))
    x = torch.randn(B, T, D, device=device)

    def run_fused():
        fused(x)[0].sum().backward()

    def run_loop():
        h = c = torch.zeros(B, H, device=device)
        outs = []
        for t in range(T):
            h, c = cell(x[:, t], (h, c))
            outs.append(h)
        torch.stack(outs, 1).sum().backward()

    def timed(fn):
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            fn()
        sync(device)
        return (time.perf_counter() - start) / 3

    loop = statistics.median(timed(run_loop) for _ in range(repeats))
    fast = statistics.median(timed(run_fused) for _ in range(repeats))
    return [[f"LSTM B={B} T={T} {D}->{H}", "per-step LSTMCell loop", loop * 1e3, 1.0],
            [f"LSTM B={B} T={T} {D}->{H}", "fused nn.LSTM", fast * 1e3, loop / fast]]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--task", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup(args)
    device = torch.device(args.device)
    repeats = 1 if args.quick else args.repeats
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    peak = matmul_rate(device, args.quick)
    print(f"bf16 matmul rate measured here: {peak / 1e12:.1f} TFLOP/s")
    rows = [row for task in args.task for row in task_rows(task, device, args.quick, repeats, peak)]
    print_table("Training step per task (ratio = fp32 eager time / variant time; > 1 is faster)",
                ["task", "variant", "samples/s", "speed-up ratio", "peak GiB", "share of bf16 matmul rate", "note"], rows)
    print_table("Fused RNN vs per-step cell loop (forward + backward)",
                ["size", "variant", "ms", "speed-up ratio"], rnn_rows(device, args.quick, repeats))


if __name__ == "__main__":
    main()
