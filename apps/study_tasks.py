"""The study's experiments that run a real task through the real CLI (`rnnsuite fit` then `rnnsuite test`, in this
process), at sizes small enough for the study's budget. apps/study.py registers them beside the synthetic ones."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import warnings
from dataclasses import dataclass

from apps.plots import Series
from apps.study import MODES, SCHEDULES, Result, Size, curve, line_chart, mean_std, pm, table


@dataclass(frozen=True)
class FramesSize:
    """The frames task (configs/frames.yaml) shrunk: Moving MNIST of `frame_size` px, one digit."""
    seeds: int
    frame_size: int
    frames: int          # observed = forecast frames
    hidden: int          # ConvLSTM channels (and half of it for the patch embedding)
    steps: int           # training steps of each run
    train_sequences: int
    test_sequences: int


FRAMES_SIZES = {
    "quick": FramesSize(seeds=3, frame_size=32, frames=4, hidden=4, steps=3, train_sequences=48, test_sequences=16),
    "default": FramesSize(seeds=3, frame_size=32, frames=8, hidden=16, steps=300, train_sequences=4800,
                          test_sequences=200),
    "full": FramesSize(seeds=5, frame_size=64, frames=10, hidden=32, steps=3000, train_sequences=48000,
                       test_sequences=1000),
}

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def cli_fit_test(args: list[str], root: str) -> dict[str, float]:
    """`rnnsuite fit <args>`, then `rnnsuite test <args>` of the final weights (last.ckpt): the test metrics."""
    from apps.cli import main

    common = [*args, *QUIET, "--trainer.default_root_dir", root]
    metrics = os.path.join(root, "metrics.json")
    # the CLI's progress lines, Lightning's tips and warnings, 24 runs over: the report has the numbers
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(["fit", *common])
            main(["test", *common, "--ckpt_path", os.path.join(root, "checkpoints", "last.ckpt"),
                  "--metrics_json", metrics])
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    with open(metrics) as f:
        return json.load(f)


def schedule_args(schedule: str) -> list[str]:
    """CLI options of one training regime: teacher forcing only = never feed the model its own prediction."""
    if schedule == "teacher forcing":
        return ["--model.sampling_max", "0.0"]
    return ["--model.sampling_schedule", schedule, "--model.sampling_max", "1.0"]


def exposure_frames(size: Size, out: str) -> Result:
    s = FRAMES_SIZES[next(name for name, known in MODES.items() if known is size)]
    r = Result("exposure_frames", "Exposure bias in the frames task: teacher forcing vs scheduled sampling",
               "The same question as the exposure experiment, asked of the real future-frame task "
               "(`configs/frames.yaml`, ConvLSTM on Moving MNIST) through the CLI: trained on true previous frames "
               "only (`--model.sampling_max 0`), the forecaster never learns to continue from its own blurred "
               "frames; each sampling schedule (`--model.sampling_schedule`) feeds it those more and more often. "
               "Test: the free-running MSE of each rollout step (`test/mse_stepNN`, summed over a frame's pixels).")
    base = ["--config", "configs/frames.yaml", "--trainer.max_time", "null", "--trainer.max_epochs", "-1",
            "--trainer.max_steps", str(s.steps), "--trainer.val_check_interval", str(s.steps),
            "--data.frame_size", str(s.frame_size), "--data.num_digits", "1",
            "--data.input_frames", str(s.frames), "--data.output_frames", str(s.frames),
            "--data.num_train_sequences", str(s.train_sequences), "--data.num_val_sequences", "16",
            "--data.num_test_sequences", str(s.test_sequences),
            "--model.decoder.embed_channels", str(max(2, s.hidden // 2)), "--model.decoder.hidden_channels",
            f"[{s.hidden}]", "--model.warmup_steps", str(max(0, s.steps // 20))]
    errors: dict[str, list[list[float]]] = {sch: [] for sch in SCHEDULES}
    blank: list[float] = []
    commands: dict[str, str] = {}
    for schedule in SCHEDULES:
        for seed in range(s.seeds):
            args = [*base, *schedule_args(schedule), "--seed_everything", str(seed)]
            root = os.path.join(out, "runs", "exposure_frames", f"{schedule.replace(' ', '_')}_seed{seed}")
            commands.setdefault(schedule, "rnnsuite fit " + " ".join(shlex.quote(a) for a in args))
            m = cli_fit_test(args, root)
            errors[schedule].append([m[f"test/mse_step{t:02d}"] for t in range(1, s.frames + 1)])
            blank.append(m["test/mse_blank"])
    steps = list(range(1, s.frames + 1))
    line_chart(os.path.join(out, "exposure_frames_error.png"),
               [curve(sch, steps, e) for sch, e in errors.items()]
               + [Series("blank frames", steps, [mean_std(blank)[0]] * len(steps))],
               f"frames task: free-running test MSE per rollout step ({s.steps} steps, {s.frame_size} px)",
               "rollout step", "MSE (sum over pixels)")
    late = slice(s.frames // 2, s.frames)
    mean_of = lambda e, part: [sum(run[part]) / len(run[part]) for run in e]  # noqa: E731
    r.markdown += [
        f"Each run: `rnnsuite fit` with the options below ({s.steps} steps, batch 16, one {s.frame_size} px digit, "
        f"{s.frames} frames observed then {s.frames} forecast, ConvLSTM of {s.hidden} channels), then `rnnsuite "
        f"test` of its final weights on {s.test_sequences} new sequences. Blank frames (predicting black) score "
        f"{pm(blank, 1)}.",
        "", "![](exposure_frames_error.png)", "",
        table(["training", "MSE step 1", f"MSE step {s.frames}", f"MSE steps {late.start + 1}-{late.stop}",
               "MSE all steps"],
              [[sch, pm([run[0] for run in e], 2), pm([run[-1] for run in e], 2), pm(mean_of(e, late), 2),
                pm(mean_of(e, slice(None)), 2)] for sch, e in errors.items()]),
        "", "Commands (seed 0; `--seed_everything 1`, `2`, ... for the others; then `rnnsuite test` with the same "
        "options and `--ckpt_path <default_root_dir>/checkpoints/last.ckpt --metrics_json m.json`):", "",
        *[f"- {sch}: `{cmd}`" for sch, cmd in commands.items()],
    ]
    best = min(errors, key=lambda sch: mean_std(mean_of(errors[sch], late))[0])
    r.markdown.insert(0, f"Measured: the lowest test MSE over rollout steps {late.start + 1}-{late.stop} comes from "
                      f"{best} ({pm(mean_of(errors[best], late), 2)}; teacher forcing only: "
                      f"{pm(mean_of(errors['teacher forcing'], late), 2)}).\n")
    r.numbers = {"per_step": errors, "mse_blank": blank, "size": s.__dict__}
    return r
