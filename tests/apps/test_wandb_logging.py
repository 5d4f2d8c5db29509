"""The default logger writes an offline wandb run that holds the metrics and media we promise."""
import glob
import json

import pytest

from tests.conftest import CONFIGS, TINY_CAPTIONING, TINY_DATA, TINY_TRAINER, TINY_TRAINER_WITH_LOGGER, run_cli
from tests.wandb_records import history, read_records


def fit_with_wandb(config, tmp_path, *extra):
    run_cli("fit", "--config", str(CONFIGS / config), *TINY_TRAINER_WITH_LOGGER, *extra, "--trainer.max_epochs", "2",
            "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.save_dir", str(tmp_path))
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    return history(read_records(run_file))


def test_captioning_run_has_metrics_gradient_norms_and_sample_table(tmp_path, capsys):
    rows = fit_with_wandb("captioning.yaml", tmp_path, *TINY_CAPTIONING)
    keys = {k for row in rows for k in row}
    assert {"train/loss", "train/grad_norm", "train/lr", "val/bleu4", "val/cider", "val/loss"} <= keys
    tables = [row for row in rows if "val/samples/_type" in row]
    assert len(tables) >= 2 and json.loads(tables[0]["val/samples/_type"]) == "table-file"
    assert all(float(row["train/grad_norm"]) > 0 for row in rows if "train/grad_norm" in row)
    out = capsys.readouterr().out
    assert "wandb run: " in out and "wandb sync" in out


# Per task: (config, metrics, {media key: wandb media type}) that the issue promises in the offline run.
TASK_MEDIA = [
    ("activity.yaml", {"val/acc", "val/loss", "train/grad_norm"},
     {"val/confusion_matrix": "images/separated", "val/clips": "table-file"}),
    ("phonemes.yaml", {"val/per", "val/loss", "train/grad_norm"}, {"val/samples": "table-file"}),
    ("frames.yaml", {"val/mse", "val/mse_blank", "val/ssim", "train/grad_norm"},
     {"val/strip_0": "images/separated", "val/animation_0": "video-file"}),
]


@pytest.mark.parametrize("config, metrics, media", TASK_MEDIA, ids=[c for c, _, _ in TASK_MEDIA])
def test_every_task_logs_its_metrics_and_media(config, metrics, media, tmp_path):
    rows = fit_with_wandb(config, tmp_path, *TINY_DATA[config])
    keys = {k for row in rows for k in row}
    assert metrics <= keys, metrics - keys
    for key, kind in media.items():
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
