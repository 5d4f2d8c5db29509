"""`make demo`: train each task's default config through the real CLI, test the best checkpoint, print a table."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# task -> (config, metric shown in the table)
TASKS = {
    "captioning": ("configs/captioning.yaml", "test/bleu4"),
}


def run(cmd: list[str], log_path: str) -> str:
    """Run a CLI command, stream nothing but keep the log; return its stdout."""
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        log.write(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\nsee {log_path}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--root", default="runs/demo")
    args = parser.parse_args()
    rnnsuite = os.path.join(os.path.dirname(sys.executable), "rnnsuite")
    rows = []
    for task in args.tasks:
        config, metric = TASKS[task]
        root = os.path.join(args.root, task)
        os.makedirs(root, exist_ok=True)
        print(f"[{task}] training {config} (log: {root}/fit.log) ...", flush=True)
        start = time.time()
        out = run([rnnsuite, "fit", "--config", config, "--trainer.default_root_dir", root,
                   "--trainer.enable_progress_bar", "false"], os.path.join(root, "fit.log"))
        minutes = (time.time() - start) / 60
        best = out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
        wandb_line = next((line for line in out.splitlines() if line.startswith("wandb run:")), "wandb run: (none)")
        metrics_path = os.path.join(root, "test_metrics.json")
        run([rnnsuite, "test", "--config", config, "--ckpt_path", best, "--metrics_json", metrics_path,
             "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"], os.path.join(root, "test.log"))
        metrics = json.load(open(metrics_path))
        print(f"[{task}] {metric} = {metrics[metric]:.4f} after {minutes:.1f} min of training")
        print(f"[{task}] checkpoint: {best}")
        print(f"[{task}] {wandb_line}")
        print(f"[{task}] all test metrics: {metrics_path}", flush=True)
        rows.append((task, metric, metrics[metric], minutes, best))
    print("\n| task | metric | value | training minutes | best checkpoint |\n|---|---|---|---|---|")
    for task, metric, value, minutes, best in rows:
        print(f"| {task} | {metric} | {value:.4f} | {minutes:.1f} | {best} |")


if __name__ == "__main__":
    main()
