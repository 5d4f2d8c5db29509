"""DDP on CPU (gloo) for every task: the same metrics as one process, and only rank 0 writes."""
import glob
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from apps.tasks import TASKS
from tests.conftest import CONFIGS, REPO, RNNSUITE, TINY_CAPTIONING, TINY_DATA, TINY_TRAINER, TINY_TRAINER_WITH_LOGGER, run_cli

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]

# An odd number of test samples: a padding DistributedSampler would count one of them twice on two ranks.
ODD_TEST_SET = {f"{name}.yaml": [spec.test_size_arg, "7"] for name, spec in TASKS.items() if spec.test_size_arg}


def ddp_cli(*args, timeout=300):
    """DDP starts its second process by re-running the command line, so DDP runs need a real `rnnsuite` process."""
    proc = subprocess.run([RNNSUITE, *args, *DDP], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("config", [c for c in ODD_TEST_SET if c != "captioning.yaml"])  # captioning (the slowest) runs under DDP in the test below
def test_two_processes_give_the_same_test_metrics_as_one(config, tmp_path):
    # No checkpoint: seed_everything gives every process the same initial weights, which is all a sync check needs.
    common = ["--config", str(CONFIGS / config), *TINY_TRAINER, *TINY_DATA[config], *ODD_TEST_SET[config],
              "--trainer.limit_test_batches", "1.0", "--data.batch_size", "2"]
    run_cli("test", *common, "--metrics_json", str(tmp_path / "one.json"), "--trainer.default_root_dir", str(tmp_path / "one"))
    ddp_cli("test", *common, "--metrics_json", str(tmp_path / "two.json"), "--trainer.default_root_dir", str(tmp_path / "two"))
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one.keys() == two.keys() and len(one) >= 3
    for key in one:
        # Metrics sync their states and agree to float precision. The loss is a batch-size-weighted mean of
        # per-batch means, the same samples in other batches: equal up to float error too.
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


def test_only_rank_zero_logs_checkpoints_and_writes_predictions(tmp_path):
    config = ["--config", str(CONFIGS / "captioning.yaml"), *TINY_CAPTIONING, *ODD_TEST_SET["captioning.yaml"]]
    out = ddp_cli("fit", *config, *TINY_TRAINER_WITH_LOGGER, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.save_dir", str(tmp_path))
    assert len(glob.glob(str(tmp_path / "wandb" / "offline-run-*"))) == 1  # one run, not one per rank
    assert out.count("best checkpoint: ") == 1
    assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "last.ckpt" and len(os.listdir(tmp_path / "checkpoints")) == 2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(7):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    predictions = tmp_path / "predictions.json"
    out = ddp_cli("predict", *config, *TINY_TRAINER, "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"),
                  "--data.predict_dir", str(images), "--predictions", str(predictions),
                  "--trainer.default_root_dir", str(tmp_path / "predict"))
    assert out.count("written to") == 1
    assert len(json.loads(predictions.read_text())) == 7  # both ranks' shares, each image once


def test_scst_fine_tuning_under_ddp(tmp_path):
    """Self-critical training on two processes: sampled captions, rewards and the greedy baseline per rank, the
    gradients averaged by DDP; it starts from a cross-entropy checkpoint and is tested like any captioning fit."""
    xe = tmp_path / "xe"
    run_cli("fit", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER, *TINY_CAPTIONING,
            "--trainer.default_root_dir", str(xe))
    scst = ["--config", str(CONFIGS / "captioning_scst.yaml"), *TINY_CAPTIONING, "--data.num_train_scenes", "24"]
    out = ddp_cli("fit", *scst, *TINY_TRAINER, "--model.init_from", str(xe / "checkpoints" / "last.ckpt"),
                  "--trainer.default_root_dir", str(tmp_path / "scst"))
    best = out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    assert os.path.isfile(best)
    metrics = tmp_path / "m.json"
    run_cli("test", *scst, *TINY_TRAINER, "--ckpt_path", best, "--metrics_json", str(metrics))
    assert {"test/cider", "test/bleu4"} <= set(json.loads(metrics.read_text()))
