"""What the CLI tells a user: the registries (`rnnsuite tasks`) and one-line errors for bad arguments."""
import pytest

from apps.cli import main
from apps.tasks import TASKS
from encoders import get_encoder_class, list_encoders
from tests.conftest import CONFIGS, TINY_TRAINER, run_cli


def test_tasks_lists_every_registered_task_config_encoder_and_decoder(capsys):
    main(["tasks"])
    out = capsys.readouterr().out
    for name, spec in TASKS.items():
        assert f"  {name} " in out and spec.metric in out and all(config in out for config in spec.configs)
    assert all(get_encoder_class(n).__name__ in out for n in list_encoders())
    assert "RNNClassifier" in out and "CTCDecoder" in out


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.ckpt is not a readable PyTorch checkpoint"):
        run_cli("test", "--config", str(CONFIGS / "frames.yaml"), *TINY_TRAINER, "--ckpt_path", str(bad))
