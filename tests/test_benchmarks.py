"""Every benchmark script runs in its --quick mode and prints a table with a ratio column.

No timing is asserted (timing belongs in the benchmarks themselves); this only keeps the scripts from rotting.
The scripts run in this process (imports are paid once); the one that spawns training runs is limited to one task.
"""
from __future__ import annotations

import runpy
import sys
import warnings

import pytest
import torch

from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"

SCRIPTS = {
    "lightning_overhead.py": ["--task", "captioning"],
    "decoding.py": [],
    "convlstm.py": [],
    "data_pipeline.py": ["--task", "phonemes"],
    "options.py": ["--task", "activity"],
    "peak_memory.py": ["--task", "frames"],
    "feature_cache.py": [],
    "gpu.py": ["--task", "frames"],
    "scst.py": [],
}


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables in `text` as lists of rows (header first, separator dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def test_every_script_is_covered() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {"common.py"}
    assert scripts == set(SCRIPTS), "add the new benchmark to SCRIPTS (and to `make bench`)"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_prints_ratio_table(script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [script, "--quick", *SCRIPTS[script]])
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    found = tables(capsys.readouterr().out)
    assert found, f"{script} printed no table"
    for table in found:
        header, rows = table[0], table[1:]
        ratio_cols = [i for i, name in enumerate(header) if "ratio" in name or "speed-up" in name]
        assert ratio_cols and rows, f"{script}: table {header} has no ratio column or no rows"
        values = [row[i] for row in rows for i in ratio_cols if row[i] not in ("", "-")]
        assert values and all(float(v) > 0 for v in values), f"{script}: ratios {values}"
