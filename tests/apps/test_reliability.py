"""Interruption and resume, numerics, config errors, determinism and distributed runs, through the real CLI."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from apps.captioning import CaptioningTask
from tests.conftest import CONFIGS, REPO, RNNSUITE, TINY_CAPTIONING, TINY_TRAINER, run_cli

CONFIG = str(CONFIGS / "captioning.yaml")


def cli_process(subcommand, *args, root):
    """`rnnsuite` as a real subprocess (signals, kill -9, DDP need one); `args` come last and win."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [RNNSUITE, subcommand, "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(root),
         *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"process ended before {path} appeared:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def step_of(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["global_step"], ckpt["epoch"]


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    proc = cli_process("fit", "--trainer.max_epochs", "1000", root=tmp_path)
    wait_for(tmp_path / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    interrupted = tmp_path / "checkpoints" / "interrupted.ckpt"
    assert interrupted.exists(), out[-3000:]
    assert "resume with --ckpt_path" in out
    assert step_of(interrupted)[0] >= step_of(tmp_path / "checkpoints" / "last.ckpt")[0] > 0


def test_resume_after_kill_9_finishes_with_the_same_steps(tmp_path):
    epochs = ["--trainer.max_epochs", "6", "--trainer.limit_train_batches", "3"]
    whole = cli_process("fit", *epochs, root=tmp_path / "whole")
    assert whole.wait(timeout=300) == 0
    killed = cli_process("fit", *epochs, root=tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    wait_for(last, killed)
    killed.kill()  # SIGKILL: no chance to save anything
    killed.wait()
    saved_step, saved_epoch = step_of(last)
    assert saved_step < 18
    resumed = cli_process("fit", *epochs, "--ckpt_path", "last", root=tmp_path / "killed")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in out or "Restored all states" in out
    assert step_of(last) == step_of(tmp_path / "whole" / "checkpoints" / "last.ckpt") == (18, 5)
    # optimizer and scheduler continued from the saved state instead of starting over
    resumed_ckpt = torch.load(last, weights_only=True)
    whole_ckpt = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    adam_steps = {int(s["step"]) for s in resumed_ckpt["optimizer_states"][0]["state"].values()}
    assert adam_steps == {18}
    assert resumed_ckpt["lr_schedulers"] == whole_ckpt["lr_schedulers"]


def test_non_finite_loss_names_step_and_batch(tmp_path, monkeypatch):
    original = CaptioningTask.compute_loss

    def poisoned(self, batch, stage):
        loss, out = original(self, batch, stage)
        return (loss * float("nan") if stage == "train" and self.global_step == 1 else loss), out

    monkeypatch.setattr(CaptioningTask, "compute_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"global step 1, epoch 0, batch 1 \(samples: scene\d+"):
        run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(tmp_path))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.no_such_option", "1"], "no_such_option"),
        (["--trainer.max_epochs", "many"], "max_epochs"),
        (["--model.decoder.cell", "lstmm"], "lstmm"),
    ],
)
def test_config_errors_give_one_clear_message(args, message, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *args)
    assert message in capsys.readouterr().err


def test_missing_data_path_is_named(tmp_path):
    # jsonargparse may wrap the datamodule's error, but its message comes through whole
    with pytest.raises((FileNotFoundError, ValueError), match=r"missing.json; pass --data.karpathy_json"):
        run_cli("fit", "--config", CONFIG, *TINY_TRAINER, "--data.karpathy_json", str(tmp_path / "missing.json"))


def test_same_seed_gives_the_same_run(tmp_path):
    for name in ("a", "b"):
        run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(tmp_path / name))
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    scores = [[v["best_model_score"] for k, v in ck["callbacks"].items() if "'monitor': 'val/bleu4'" in k] for ck in (a, b)]
    assert scores[0] == scores[1] and len(scores[0]) == 1  # same validation score


def test_ddp_on_two_processes_gives_the_same_validation_metrics(tmp_path):
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(tmp_path))
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    common = ["--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", ckpt, "--trainer.limit_val_batches", "1.0"]
    run_cli("validate", *common, "--metrics_json", str(tmp_path / "one.json"))
    proc = subprocess.run(  # DDP starts its second process by re-running the command: it needs a real one
        [RNNSUITE, "validate", *common, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--metrics_json", str(tmp_path / "two.json"),
         "--trainer.default_root_dir", str(tmp_path / "ddp")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    # 8 validation scenes in one batch of 8, or two ranks with 4 each: every scene counted once either way.
    # Corpus metrics (BLEU, CIDEr-D, ROUGE-L) sync their statistics and agree exactly; the loss is a mean of
    # per-batch token means, so it moves slightly when the batches are cut differently.
    assert one.keys() == two.keys() and {"val/bleu4", "val/cider", "val/loss"} <= one.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-3 if key == "val/loss" else 1e-6, abs=1e-6), key


class _Payload:
    """Unpickling this runs os.makedirs(marker): what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("subcommand", ["test", "predict", "fit"])
def test_checkpoint_with_pickled_code_is_refused_not_executed(tmp_path, subcommand):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(str(marker))}}, crafted)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        run_cli(subcommand, "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", str(crafted),
                "--trainer.default_root_dir", str(tmp_path), "--data.predict_dir", str(tmp_path))
    assert not marker.exists()
