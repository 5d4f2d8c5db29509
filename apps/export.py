"""`python -m apps.export TRAINED.ckpt SHIPPED.ckpt`: keep what evaluation and prediction need (weights,
hyperparameters incl. vocabulary/labels, epoch/step), drop optimizer, scheduler and callback state."""
from __future__ import annotations

import argparse
import os

import torch

KEEP = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step", "pytorch-lightning_version")


def export(source: str, target: str) -> None:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in checkpoint]
    if missing:
        raise ValueError(f"{source} has no {missing}: is it a checkpoint written by `rnnsuite fit`?")
    slim = {k: checkpoint[k] for k in KEEP if k in checkpoint}
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    torch.save(slim, target)
    print(f"{target}: {os.path.getsize(target) / 1e6:.1f} MB (from {os.path.getsize(source) / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    export(args.source, args.target)


if __name__ == "__main__":
    main()
