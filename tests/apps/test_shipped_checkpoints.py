"""The checkpoints committed under checkpoints/ still load with today's code and still score (on a slice of the
default test data, so the check stays quick; checkpoints/README.md has the full-test numbers)."""
import json

import pytest

from apps.tasks import TASKS
from tests.conftest import REPO, TINY_TRAINER, run_cli

PRESENT = sorted(p.stem for p in (REPO / "checkpoints").glob("*.ckpt"))


def test_every_shipped_checkpoint_has_a_check():
    unchecked = [name for name in PRESENT if name not in TASKS or TASKS[name].shipped_bound is None]
    assert not unchecked, f"give {unchecked} a shipped_check and shipped_bound in apps/tasks.py"


@pytest.mark.parametrize("task", PRESENT)
def test_shipped_checkpoint_loads_and_scores(task, tmp_path):
    spec = TASKS[task]
    trainer = list(TINY_TRAINER)
    i = trainer.index("--trainer.limit_test_batches")
    del trainer[i : i + 2]  # the whole (small) test set unless `shipped_check` limits it
    out = tmp_path / "metrics.json"
    run_cli("test", "--config", spec.config, *trainer, *spec.shipped_check,
            "--ckpt_path", str(REPO / "checkpoints" / f"{task}.ckpt"), "--metrics_json", str(out))
    value = json.loads(out.read_text())[spec.metric]
    bound = spec.shipped_bound
    assert value >= bound if spec.higher_is_better else value <= bound, f"{task}: {spec.metric} = {value}"
