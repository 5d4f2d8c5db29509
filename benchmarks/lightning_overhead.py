"""Captioning training step: rnnsuite under Lightning vs a hand-written PyTorch loop, same model and batches.

Prints seconds per step for each and their ratio, measured in one run, alternating the two several times
(these machines are noisy). Run: `.venv/bin/python benchmarks/lightning_overhead.py [--steps 60 --repeats 3]`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch

from apps.callbacks import GradNormMonitor
from apps.captioning import CaptioningTask
from datamodules.captioning import CaptioningDataModule
from decoders.caption import CaptionDecoder
from encoders import SmallCNNEncoder


def build_model(vocab: list[str]) -> CaptioningTask:
    """The default config's model (configs/captioning.yaml)."""
    torch.manual_seed(0)
    return CaptioningTask(
        encoder=SmallCNNEncoder(channels=[32, 64, 128, 256]),
        decoder=lambda in_dim, vocab_size: CaptionDecoder(in_dim, vocab_size, embed_dim=128, hidden_dim=256, dropout=0.1),
        vocab=vocab, lr=2e-3, weight_decay=1e-4, scheduler="none",
    )


def hand_written(vocab, batches, clip: float) -> float:
    model = build_model(vocab).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    start = time.perf_counter()
    for batch in batches:
        loss, _ = model.compute_loss(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


class _StepTimer(pl.Callback):
    """Times from the first training batch to the end of the last one (excludes Trainer set-up/teardown)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def lightning(vocab, batches, clip: float) -> float:
    model = build_model(vocab)
    timer = _StepTimer()
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        gradient_clip_val=clip, callbacks=[GradNormMonitor(), timer], num_sanity_val_steps=0, limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)  # the same pre-built batches
    trainer.fit(model, train_dataloaders=loader)
    # the first step is excluded by both measurements' warm-up, see main()
    return (timer.end - timer.start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    dm = CaptioningDataModule(num_train_scenes=args.steps * args.batch_size, num_val_scenes=1, num_test_scenes=1,
                              batch_size=args.batch_size)
    batches = list(dm.train_dataloader())
    hand_written(dm.vocab, batches[:3], 1.0)  # warm-up: allocator, MKL-DNN kernels
    results = {"hand-written loop": [], "Lightning (rnnsuite)": []}
    for _ in range(args.repeats):
        results["hand-written loop"].append(hand_written(dm.vocab, batches, 1.0))
        results["Lightning (rnnsuite)"].append(lightning(dm.vocab, batches, 1.0))
    base = statistics.median(results["hand-written loop"])
    print(f"captioning training step, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    print(f"{'variant':<24}{'ms/step (median)':>18}{'ratio':>8}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<24}{median * 1000:>18.1f}{median / base:>8.3f}")


if __name__ == "__main__":
    main()
