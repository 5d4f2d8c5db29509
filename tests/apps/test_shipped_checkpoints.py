"""The checkpoints committed under checkpoints/ still load with today's code and still score (on a slice of the
default test data, so the check stays quick; checkpoints/README.md has the full-test numbers)."""
import json

import pytest

from tests.conftest import CONFIGS, REPO, TINY_TRAINER, run_cli

# task -> (extra arguments that keep evaluation small, metric, bound it must meet, higher is better)
SHIPPED = {
    "captioning": (["--trainer.limit_test_batches", "4"], "test/bleu4", 0.70, True),
    "phonemes": (["--data.num_train_utterances", "16", "--data.num_val_utterances", "4",
                  "--data.num_test_utterances", "48"], "test/per", 0.10, False),
    "frames": (["--data.num_test_sequences", "64"], "test/mse_vs_blank", 0.85, False),
    "activity": (["--trainer.limit_test_batches", "4"], "test/acc", 0.90, True),
}
PRESENT = sorted(p.stem for p in (REPO / "checkpoints").glob("*.ckpt"))


def test_every_shipped_checkpoint_has_a_check():
    assert set(PRESENT) <= set(SHIPPED)


@pytest.mark.parametrize("task", PRESENT)
def test_shipped_checkpoint_loads_and_scores(task, tmp_path):
    extra, metric, bound, higher = SHIPPED[task]
    trainer = list(TINY_TRAINER)
    i = trainer.index("--trainer.limit_test_batches")
    del trainer[i : i + 2]  # the whole (small) test set unless `extra` limits it
    out = tmp_path / "metrics.json"
    run_cli("test", "--config", str(CONFIGS / f"{task}.yaml"), *trainer, *extra,
            "--ckpt_path", str(REPO / "checkpoints" / f"{task}.ckpt"), "--metrics_json", str(out))
    value = json.loads(out.read_text())[metric]
    assert value >= bound if higher else value <= bound, f"{task}: {metric} = {value}"
