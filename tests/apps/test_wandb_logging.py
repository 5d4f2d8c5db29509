"""The default logger writes an offline wandb run that holds the metrics and media we promise."""
import glob
import json

import pytest

from apps.tasks import TASKS
from tests.conftest import CONFIGS, TINY_CAPTIONING, TINY_TRAINER, TINY_TRAINER_WITH_LOGGER, run_cli
from tests.wandb_records import history, read_finished_run


def fit_with_wandb(config, tmp_path, *extra):
    run_cli("fit", "--config", str(CONFIGS / config), *TINY_TRAINER_WITH_LOGGER, *extra, "--trainer.max_epochs", "2",
            "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.save_dir", str(tmp_path))
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    return history(read_finished_run(run_file))


def test_captioning_run_has_metrics_gradient_norms_and_sample_table(tmp_path, capsys):
    rows = fit_with_wandb("captioning.yaml", tmp_path, *TINY_CAPTIONING)
    keys = {k for row in rows for k in row}
    assert {"train/loss", "train/grad_norm", "train/lr", "val/bleu4", "val/cider", "val/loss"} <= keys
    tables = [row for row in rows if "val/samples/_type" in row]
    assert len(tables) >= 2 and json.loads(tables[0]["val/samples/_type"]) == "table-file"
    assert all(float(row["train/grad_norm"]) > 0 for row in rows if "train/grad_norm" in row)
    out = capsys.readouterr().out
    assert "wandb run: " in out and "wandb sync" in out


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_logs_its_metrics_and_media(task, tmp_path):
    """Each registered task's validation metrics (its main metric, the loss), gradient norms and promised media."""
    spec = TASKS[task]
    rows = fit_with_wandb(f"{task}.yaml", tmp_path, *spec.tiny)
    keys = {k for row in rows for k in row}
    metrics = {spec.task_class().main_metric, "val/loss", "train/loss", "train/grad_norm"}
    assert metrics <= keys, metrics - keys
    assert spec.media, f"{task}: say in apps/tasks.py what media its validation logs"
    for key, kind in spec.media.items():
        logged = [json.loads(row[f"{key}/_type"]) for row in rows if f"{key}/_type" in row]
        assert logged and set(logged) == {kind}, (key, logged)


def test_wandb_artifact_checkpoint_needs_online_mode(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RuntimeError, match="needs the wandb API, but WANDB_MODE=offline"):
        run_cli("test", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER, *TINY_CAPTIONING,
                "--ckpt_path", "wandb:me/rnnsuite/model-abc:v3")


def test_wandb_artifact_is_downloaded_and_its_checkpoint_used(monkeypatch, tmp_path):
    import wandb

    from apps.cli import resolve_wandb_artifact

    (tmp_path / "model.ckpt").write_bytes(b"")
    calls = []

    class FakeArtifact:
        def download(self):
            return str(tmp_path)

    class FakeApi:
        def artifact(self, name, type=None):
            calls.append((name, type))
            return FakeArtifact()

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "Api", FakeApi)
    assert resolve_wandb_artifact("wandb:me/rnnsuite/model-abc:v3") == str(tmp_path / "model.ckpt")
    assert calls == [("me/rnnsuite/model-abc:v3", "model")]


def test_outputs_follow_default_root_dir_and_evaluation_leaves_the_fit_record_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to ./runs would land here
    root = tmp_path / "exp"
    run_cli("fit", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER_WITH_LOGGER, *TINY_CAPTIONING,
            "--trainer.default_root_dir", str(root))
    assert len(glob.glob(str(root / "wandb" / "offline-run-*"))) == 1 and (root / "config.yaml").exists()
    fit_config = (root / "config.yaml").read_text()
    run_cli("test", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER_WITH_LOGGER, *TINY_CAPTIONING,
            "--trainer.default_root_dir", str(root), "--ckpt_path", str(root / "checkpoints" / "last.ckpt"))
    assert len(glob.glob(str(root / "wandb" / "offline-run-*"))) == 1  # no second run for an evaluation
    assert (root / "config.yaml").read_text() == fit_config
    assert not (tmp_path / "runs").exists()
