"""`make demo` end to end on one task with tiny data: shipped checkpoint scored, a short run trained and scored."""
from apps import demo
from tests.conftest import TINY_DATA


def test_demo_scores_the_shipped_checkpoint_and_a_short_run(tmp_path, capsys):
    demo.main(["--tasks", "frames", "--root", str(tmp_path), "--minutes", "0.1", "--short_run_test_fraction", "1.0",
               *TINY_DATA["frames.yaml"], "--data.num_train_sequences", "16"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| frames | test/mse_vs_blank |")]
    assert len(table) == 1, out
    shipped, short_run = (float(cell) for cell in table[0].split("|")[3:5])
    assert 0 < shipped < 1 and short_run > 0  # the shipped model beats a blank prediction; a 6-second one need not
    assert (tmp_path / "frames" / "shipped_metrics.json").exists() and "best checkpoint " in out
