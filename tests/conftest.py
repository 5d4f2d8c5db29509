"""Shared test set-up: no network, no writes outside tmp, and a helper that runs the real CLI in-process."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from apps.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# A trainer that does the least work and writes no logs; tests add --trainer.* overrides on top.
TINY_TRAINER = [
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.max_time", "null",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
]

# TINY_TRAINER without its first pair, `--trainer.logger false`: the config's (offline) WandbLogger stays on.
TINY_TRAINER_WITH_LOGGER = TINY_TRAINER[2:]

# The console script, for tests that need a real process (signals, kill -9, DDP).
RNNSUITE = os.path.join(os.path.dirname(sys.executable), "rnnsuite")

# Per shipped config: data (and size) overrides that make one step cheap, from the task registry. A config
# without an entry fails tests/test_configs.py, so a new config cannot ship untested.
TINY_DATA = {name: list(tiny) for spec in TASKS.values() for name, tiny in spec.configs.items()}

# Captioning model small enough for unit-speed tests.
TINY_CAPTIONING = [
    *TINY_DATA["captioning.yaml"],
    "--model.encoder.channels", "[8, 16]",
    "--model.decoder.embed_dim", "16",
    "--model.decoder.hidden_dim", "32",
    "--model.warmup_steps", "0",
]


@pytest.fixture(autouse=True, scope="session")
def _offline_and_isolated(tmp_path_factory: pytest.TempPathFactory) -> None:
    """wandb offline into tmp, data caches into tmp, and two threads (CI has two cores)."""
    root = tmp_path_factory.mktemp("env")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_DIR"] = str(root / "wandb")
    os.environ.setdefault("RNNSUITE_CACHE", str(root / "cache"))
    os.environ["TORCH_HOME"] = str(root / "torch_home")  # an empty hub cache: nothing pretrained is found
    torch.set_num_threads(2)


def run_cli(*args: str) -> None:
    """Run `rnnsuite <args>` in this process (the same entry point as the console script)."""
    from apps.cli import main

    main(list(args))


def cli_error(monkeypatch: pytest.MonkeyPatch, *args: str, max_lines: int = 2) -> str:
    """`rnnsuite <args>` as the console script runs it, for a bad input: the message it exits with (no traceback),
    checked to be an `error: ...` of at most `max_lines` lines."""
    from apps.cli import main

    monkeypatch.setattr(sys, "argv", ["rnnsuite", *args])
    with pytest.raises(SystemExit) as info:
        main()
    message = str(info.value.code)
    assert message.startswith("error: ") and len(message.splitlines()) <= max_lines, message
    return message


def overfit(task: torch.nn.Module, batch, steps: int, lr: float) -> list[float]:
    """Train `task` on one batch with Adam through its own `compute_loss`; the losses, first to last."""
    optimizer = torch.optim.Adam(task.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = task.compute_loss(batch, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
