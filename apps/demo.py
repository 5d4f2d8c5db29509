"""`make demo`: for every task, score the shipped checkpoint and a short training run on the embedded data,
all through the real CLI, then print one table and where the runs are.

`python -m apps.demo --full` trains each default config for its whole budget instead of a short run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from apps.tasks import TASKS

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def rnnsuite(args: list[str], log_path: str) -> str:
    """Run the CLI, keep its full output in `log_path`, return stdout; stop the demo with the log's path on failure."""
    exe = os.path.join(os.path.dirname(sys.executable), "rnnsuite")
    with open(log_path, "w") as log:
        proc = subprocess.run([exe, *args], stdout=subprocess.PIPE, stderr=log, text=True)
        log.write(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"rnnsuite {' '.join(args)} failed with exit code {proc.returncode}; see {log_path}")
    return proc.stdout


def evaluate(config: str, ckpt: str, root: str, name: str, extra: list[str], test_fraction: float = 1.0) -> dict[str, float]:
    path = os.path.join(root, f"{name}_metrics.json")
    rnnsuite(["test", "--config", config, "--ckpt_path", ckpt, "--metrics_json", path, "--trainer.logger", "false",
              "--trainer.limit_test_batches", str(test_fraction), "--trainer.default_root_dir", root, *QUIET, *extra],
             os.path.join(root, f"{name}.log"))
    with open(path) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--root", default="runs/demo")
    parser.add_argument("--minutes", type=float, default=1.0, help="training time of each short run")
    parser.add_argument("--full", action="store_true", help="train each default config for its full budget")
    parser.add_argument("--short_run_test_fraction", type=float, default=0.25,
                        help="share of the test set that scores a short run (the shipped checkpoints get all of it)")
    args, extra = parser.parse_known_args(argv)  # anything else, e.g. --data.batch_size 8, goes to every rnnsuite call
    rows = []
    for task in args.tasks:
        config, metric = TASKS[task].config, TASKS[task].metric
        root = os.path.abspath(os.path.join(args.root, task))
        os.makedirs(root, exist_ok=True)
        shipped_ckpt = os.path.join("checkpoints", f"{task}.ckpt")
        shipped = None
        if os.path.exists(shipped_ckpt):
            print(f"[{task}] scoring the shipped checkpoint {shipped_ckpt} ...", flush=True)
            shipped = evaluate(config, shipped_ckpt, root, "shipped", extra)[metric]
        budget = [] if args.full else ["--trainer.max_time", f"00:00:{int(args.minutes):02d}:{int(args.minutes % 1 * 60):02d}"]
        print(f"[{task}] training {config} ({'full budget' if args.full else f'{args.minutes} min'}) ...", flush=True)
        start = time.time()
        out = rnnsuite(["fit", "--config", config, "--trainer.default_root_dir", root, "--trainer.logger.save_dir", root,
                        *budget, *QUIET, *extra], os.path.join(root, "fit.log"))
        minutes = (time.time() - start) / 60
        best = out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
        wandb_run = next((line.split()[2] for line in out.splitlines() if line.startswith("wandb run:")), "-")
        fraction = 1.0 if args.full else args.short_run_test_fraction  # a 1-minute model needs no 2,000-scene verdict
        trained = evaluate(config, best, root, "short_run", extra, fraction)[metric]
        print(f"[{task}] {metric}: shipped {shipped if shipped is None else f'{shipped:.4f}'}, "
              f"after {minutes:.1f} min of training {trained:.4f}", flush=True)
        rows.append((task, metric, shipped, trained, minutes, best, wandb_run))
    short = "run" if args.full else f"run ({args.short_run_test_fraction:.0%} of the test set)"
    print(f"\n| task | metric | shipped checkpoint | {'full' if args.full else 'short'} {short} | minutes |\n|---|---|---|---|---|")
    for task, metric, shipped, trained, minutes, _, _ in rows:
        shown = "-" if shipped is None else f"{shipped:.4f}"
        print(f"| {task} | {metric} | {shown} | {trained:.4f} | {minutes:.1f} |")
    print("\nruns (checkpoints, logs, metrics JSON):")
    for task, _, _, _, _, best, wandb_run in rows:
        print(f"  {task}: best checkpoint {best}")
        print(f"  {task}: wandb run {wandb_run}  (upload: .venv/bin/wandb sync {wandb_run})")


if __name__ == "__main__":
    main()
