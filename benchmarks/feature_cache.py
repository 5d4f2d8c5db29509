"""A training step on cached features vs the same step through the frozen pretrained encoder, per task, measured
in one run (ratio = uncached time / cached time, so > 1 means caching is faster):

captioning: configs/captioning_pretrained.yaml's model (EfficientNet-Lite0 frozen -> CaptionDecoder), a batch of
  224 px images vs the (B, 1, 1280) features the cache holds for them;
activity: configs/activity_pretrained.yaml's model (FrameEncoder(EfficientNet-Lite0) frozen -> RNNClassifier),
  a batch of 8-frame 224 px clips vs their (B, 8, 1280) per-frame features.
A step = forward, loss, backward and an AdamW step of the decoder (the encoder is frozen in both). Reading the
batch is not timed: uncached batches also cost image decoding, which only widens the gap. The one-time cost of
building the cache is about one uncached forward per image or cached frame.
Run: `nice -n 5 .venv/bin/python benchmarks/feature_cache.py [--threads 2] [--quick]`.
"""
from __future__ import annotations

import torch

import common
from common import base_parser, interleaved, machine, median_ratio, print_table, setup

from apps.activity import ActivityTask
from apps.captioning import CaptioningTask
from datamodules.activity import ClipBatch
from datamodules.captioning import CaptionBatch
from decoders import CaptionDecoder
from decoders.classifier import RNNClassifier
from encoders import EfficientNetLiteEncoder, FrameEncoder


def captioning(batch_size: int, size: int) -> tuple[torch.nn.Module, CaptionBatch, CaptionBatch]:
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(300)]
    task = CaptioningTask(EfficientNetLiteEncoder(pretrained=True), lambda d, v: CaptionDecoder(
        d, v, embed_dim=256, hidden_dim=512, cell="lstm", num_layers=1, dropout=0.3, conditioning="both"),
        vocab=vocab, freeze_encoder=True)
    images = torch.randn(batch_size, 3, size, size)
    tokens = torch.randint(4, len(vocab), (batch_size, 14))
    tokens[:, 0] = 1
    batch = CaptionBatch(images, tokens, [[["w4"]]] * batch_size, [str(i) for i in range(batch_size)])
    with torch.no_grad():
        features = task.encoder.eval()(images).seq
    return task, batch, batch._replace(images=None, features=features)


def activity(batch_size: int, size: int, frames: int = 8) -> tuple[torch.nn.Module, ClipBatch, ClipBatch]:
    encoder = FrameEncoder(EfficientNetLiteEncoder(pretrained=True))
    task = ActivityTask(encoder, lambda d, c: RNNClassifier(d, c, hidden_dim=256, dropout=0.3), class_names=list("abcdefgh"),
                        freeze_encoder=True)
    clips = torch.randn(batch_size, frames, 3, size, size)
    lengths = torch.full((batch_size,), frames)
    batch = ClipBatch(clips, lengths, torch.randint(0, 8, (batch_size,)), [str(i) for i in range(batch_size)])
    with torch.no_grad():
        features = encoder.eval()(clips, lengths).seq
    return task, batch, batch._replace(frames=None, features=features)


def step_timer(task: torch.nn.Module, batch) -> callable:
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    task.train()
    task.encoder.eval()  # frozen: batch-norm statistics fixed, as on_train_epoch_start does

    def run() -> float:
        start = common.clock()
        loss, _ = task.compute_loss(batch, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return common.clock() - start

    run()  # warm-up
    return run


def main() -> None:
    args = base_parser(__doc__).parse_args()
    setup(args)
    batch_size, size, repeats = (4, 64, 1) if args.quick else (32, 224, 5)
    rows = []
    for name, make in (("captioning", captioning), ("activity", activity)):
        task, plain, cached = make(batch_size if name == "captioning" else batch_size // 2, size)
        times = interleaved({"uncached": step_timer(task, plain), "cached": step_timer(task, cached)}, repeats)
        rows.append([name, min(times["uncached"]) * 1e3, min(times["cached"]) * 1e3,
                     median_ratio(times["uncached"], times["cached"])])
    print_table(f"Training step, frozen EfficientNet-Lite0 at {size} px: cached features vs images "
                f"({machine()}, {args.threads} threads)", ["task", "uncached ms", "cached ms", "speed-up x"], rows)


if __name__ == "__main__":
    main()
