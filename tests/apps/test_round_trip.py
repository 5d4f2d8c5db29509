"""Save -> load for every registered task: the reloaded checkpoint predicts exactly what the trained model in
memory did (two different objects; weights that training changed), and keeps the data links (vocabulary,
class names, phoneme set) that predict needs."""
import copy

import numpy as np
import pytest
import torch
from pytorch_lightning import LightningDataModule

from apps.cli import RNNSuiteCLI
from apps.core import SequenceTask
from apps.tasks import TASKS
from tests.conftest import TINY_TRAINER


def assert_same(a, b, where="prediction"):
    """Equal predictions: the same structure, equal tensors/arrays/values at every leaf."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", list(TASKS))
def test_reloaded_checkpoint_predicts_what_the_trained_model_did(name, tmp_path):
    spec = TASKS[name]
    cli = RNNSuiteCLI(SequenceTask, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                      args=["--config", spec.config, *TINY_TRAINER, *spec.tiny, "--trainer.default_root_dir", str(tmp_path)])
    trained, data = cli.model, cli.datamodule
    initial = copy.deepcopy(trained.state_dict())
    cli.trainer.fit(trained, data)
    assert any(not torch.equal(initial[k], v) for k, v in trained.state_dict().items()), "training changed nothing"
    cli.trainer.save_checkpoint(tmp_path / "saved.ckpt")

    reloaded = spec.task_class().load_from_checkpoint(tmp_path / "saved.ckpt", weights_only=True)
    assert reloaded is not trained
    for arg in spec.task_class().data_links.values():  # what predict needs without the training data
        assert_same(reloaded.hparams[arg], trained.hparams[arg], arg)
    # what predict reads: a prompt for a generator (charlm), else a validation batch stands in for a predict folder
    batch = next(iter(data.predict_dataloader() if hasattr(data, "prompt") else data.val_dataloader()))
    predictions = []
    for model in (trained.eval(), reloaded.eval()):
        torch.manual_seed(0)  # sampling decoders draw the same numbers
        with torch.no_grad():
            predictions.append(model.predict_step(batch, 0))
    assert_same(*predictions)
