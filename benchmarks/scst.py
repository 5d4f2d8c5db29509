"""An SCST training step vs a cross-entropy step of the same model on the same batches, measured in one run
(ratio = SCST time / cross-entropy time, so > 1 means SCST is slower):

cross-entropy: configs/captioning.yaml's model, teacher forcing in one fused LSTM call;
SCST (configs/captioning_scst.yaml's settings: K samples per image): K captions drawn per image step by step with
  autograd, CIDEr-D rewards in Python (document frequencies of the training references, built once, not timed),
  the policy-gradient loss; with the greedy baseline also one greedy decode, with the mean baseline none.
A step = forward, loss, backward and an AdamW step. The weights are checkpoints/captioning.ckpt's (what SCST starts
from: sampled captions have a trained model's lengths); --quick uses a tiny random model. Also shown: the share of
the SCST step spent computing rewards.
Run: `nice -n 5 .venv/bin/python benchmarks/scst.py [--threads 1] [--repeats 5] [--quick]`.
"""
from __future__ import annotations

import copy

import torch
import yaml

import common
from common import CONFIGS, REPO, base_parser, build, first_batches, interleaved, machine, median_ratio, print_table, \
    setup

from apps.caption_metrics import CiderDScorer


def step_timer(task: torch.nn.Module, batches: list) -> callable:
    """Seconds per training step, averaged over `batches`."""
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-5)
    task.train()

    def run() -> float:
        start = common.clock()
        for batch in batches:
            loss, _ = task.compute_loss(batch, "train")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (common.clock() - start) / len(batches)

    return run


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="training batches per measurement")
    args = parser.parse_args()
    setup(args)
    repeats, n_batches = (1, 1) if args.quick else (args.repeats, args.batches)
    scst = yaml.safe_load((CONFIGS / "captioning_scst.yaml").read_text())["model"]["init_args"]
    xe, datamodule, _ = build("captioning", quick=args.quick)
    if not args.quick:
        xe.load_weights(str(REPO / scst["init_from"]))
    xe.log = lambda *a, **k: None  # no Trainer: logging is not what is measured
    batches = first_batches(datamodule, n_batches)
    reward = CiderDScorer(datamodule.train_references)
    variants = {"cross-entropy": step_timer(xe, batches)}
    reward_share = {}
    for baseline in ("greedy", "mean"):
        task = copy.deepcopy(xe)
        task.objective, task.scst_samples, task.scst_baseline = "scst", scst["scst_samples"], baseline
        task.cider_reward = reward
        seconds = {"reward": 0.0}
        score = task.reward

        def timed_reward(generated, references, score=score, seconds=seconds):
            start = common.clock()
            out = score(generated, references)
            seconds["reward"] += common.clock() - start
            return out

        task.reward = timed_reward
        variants[f"SCST, {baseline} baseline"] = step_timer(task, batches)
        reward_share[f"SCST, {baseline} baseline"] = seconds
    for run in variants.values():
        run()  # warm-up
    for seconds in reward_share.values():
        seconds["reward"] = 0.0
    times = interleaved(variants, repeats)
    base = times["cross-entropy"]
    rows = []
    for name, measured in times.items():
        share = "-" if name not in reward_share else \
            f"{reward_share[name]['reward'] / (sum(measured) * n_batches):.0%}"
        rows.append([name, min(measured) * 1e3, median_ratio(measured, base), share])
    print_table(f"Captioning training step, batch {len(batches[0].ids)}, K = {scst['scst_samples']} samples per image "
                f"({machine()})", ["step", "ms", "ratio vs cross-entropy", "reward share"], rows)


if __name__ == "__main__":
    main()
