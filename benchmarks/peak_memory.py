"""Peak memory (RSS) of each default training run: `rnnsuite fit --config configs/<task>.yaml`, cut short by
`--trainer.max_time`, without a logger, checkpoints into a temporary folder; everything else as configured.

Each run is a child process; its peak RSS is read from os.wait4's rusage (that child and the processes it waited
for, e.g. DataLoader workers' own peak is not added). The baseline in the same run is a child that only imports
the CLI (python, torch, Lightning, torchvision, torchaudio): ratio = run / baseline.
Run: `nice -n 5 .venv/bin/python benchmarks/peak_memory.py [--max_time 00:00:00:45] [--task all|captioning|...]`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from common import REGISTRY, REPO, TASKS, base_parser, machine, print_table, setup


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, exit status) of a child running `cmd`."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}):\n{stderr[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, child.returncode  # Linux: ru_maxrss in KiB


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--task", choices=["all", *TASKS], default="all")
    parser.add_argument("--max_time", default="00:00:00:45", help="training time of each run (DD:HH:MM:SS)")
    args = parser.parse_args()
    setup(args)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    baseline, _, _ = peak_rss_mb([sys.executable, "-c", "import apps.cli"], env)
    rows = [["(baseline) import apps.cli", "-", f"{baseline:.0f}", 1.0]]
    with tempfile.TemporaryDirectory() as tmp:
        for task in TASKS if args.task == "all" else [args.task]:
            cmd = [sys.executable, "-m", "apps.cli", "fit", "--config", f"configs/{task}.yaml",
                   "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", os.path.join(tmp, task)]
            if args.quick:
                cmd += [*REGISTRY[task].tiny, "--trainer.max_time", "null", "--trainer.max_steps", "2",
                        "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "null",
                        "--trainer.check_val_every_n_epoch", "1"]
            else:
                cmd += ["--trainer.max_time", args.max_time]
            mb, seconds, _ = peak_rss_mb(cmd, env)
            rows.append([f"{task}.yaml", f"{seconds:.0f}", f"{mb:.0f}", mb / baseline])
    what = "2 steps on tiny data (--quick)" if args.quick else f"--trainer.max_time {args.max_time}"
    print_table(f"Peak RSS of default training runs, {what} ({machine()}); ratio = run / baseline",
                ["run", "wall s", "peak RSS MB", "ratio"], rows)


if __name__ == "__main__":
    main()
