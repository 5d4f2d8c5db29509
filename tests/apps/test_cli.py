"""What the CLI tells a user: the registries (`rnnsuite tasks`) and one-line errors for bad arguments."""
import importlib
import inspect

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


def test_top_level_help_lists_the_tasks_and_their_configs(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "rnnsuite tasks" in out
    for name, spec in TASKS.items():
        assert f"  {name} " in out and all(config in out for config in spec.configs)


def readme_help_commands() -> list[list[str]]:
    """Every `rnnsuite ... .help ...` command quoted in the README, as written."""
    import re
    import shlex

    text = (CONFIGS.parent / "README.md").read_text()
    return [shlex.split(c)[1:] for c in re.findall(r"`(rnnsuite [^`]*\.help[^`]*)`", text)]


@pytest.mark.parametrize("argv", readme_help_commands(), ids=" ".join)
def test_readme_help_examples_work_as_written(argv, capsys, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # the README's paths are relative to the repository
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "usage:" in out
    wanted = argv[argv.index(next(a for a in argv if a.endswith(".help"))) + 1:]
    if wanted:  # the class asked for is the one documented: every argument of its own is listed
        cls = find_class(wanted[0])
        linked = ("in_dim", "vocab_size", "num_classes")  # a decoder's sizes come from the encoder and the data
        own = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs", *linked)]
        assert own and all(f".{p} " in out or f".{p}\n" in out or f".{p}=" in out for p in own), (cls, own)
    else:  # `--config X --model.help`: the config's task, not the base class
        assert "--model.encoder" in out and "--model.decoder" in out


def find_class(name: str) -> type:
    """A class by import path, or by short name among the tasks, datamodules and decoders."""
    if "." in name:
        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    for module in [*(spec.task.rpartition(".")[0] for spec in TASKS.values()), "decoders", "encoders",
                   *(f"datamodules.{n}" for n in TASKS)]:
        cls = getattr(importlib.import_module(module), name, None)
        if cls is not None:
            return cls
    raise LookupError(name)


def test_readme_quotes_help_examples():
    assert len(readme_help_commands()) >= 4


def test_lightning_optimizer_option_is_refused_with_the_tasks_options(capsys):
    with pytest.raises(SystemExit, match="--model.optimizer adamw"):
        main(["fit", "--config", str(CONFIGS / "sentiment.yaml"), "--optimizer", "SGD"])
