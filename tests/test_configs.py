"""Every shipped config parses and trains for one step, so configs cannot rot."""
import pytest

from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, run_cli

SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_every_config_has_tiny_overrides():
    missing = [name for name in SHIPPED if name not in TINY_DATA]
    assert not missing, f"add cheap data overrides for {missing} to TINY_DATA in tests/conftest.py"


@pytest.mark.parametrize("name", SHIPPED)
def test_config_runs_one_step(name, tmp_path):
    run_cli(
        "fit", "--config", str(CONFIGS / name), *TINY_TRAINER, *TINY_DATA.get(name, []),
        "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_config_default_logger_is_offline_wandb(name):
    import yaml

    logger = yaml.safe_load((CONFIGS / name).read_text())["trainer"]["logger"]
    assert logger["class_path"].endswith("WandbLogger") and logger["init_args"]["offline"] is True
