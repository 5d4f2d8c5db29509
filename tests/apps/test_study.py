"""`rnnsuite study --quick`: the report, its charts and finite numbers, and the claims that hold at the quick size
(the runs are seeded and single-threaded, so the numbers are the same on every run)."""
import json
import math
import os
import re

import pytest
import torch
from PIL import Image

from apps.cli import main
from apps.study import EXPERIMENTS, MODES, ahead_batch, next_symbol_batch, recall_batch


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    threads = torch.get_num_threads()
    main(["study", "--quick", "--out", str(out)])  # through the real CLI dispatch
    torch.set_num_threads(threads)
    return out, (out / "REPORT.md").read_text(), json.loads((out / "results.json").read_text())


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)):
        yield tree


def test_report_has_every_experiment_its_rerun_command_and_its_charts(study):
    out, report, results = study
    for name in EXPERIMENTS:
        assert f"rnnsuite study --quick --out {out} --only {name}" in report
        assert name in results
    charts = re.findall(r"!\[\]\(([^)]+\.png)\)", report)
    assert len(charts) >= 7
    for chart in charts:
        with Image.open(out / chart) as img:
            assert img.size == (640, 400)
            assert len(set(img.convert("L").getdata())) > 2, f"{chart} is blank"
    assert " ± " in report


def test_every_number_is_finite_except_a_diverged_run(study):
    _, _, results = study
    for name in ("vanishing", "exposure", "exposure_frames", "sharing", "packing", "depth"):
        values = list(_numbers(results[name]))
        assert values and all(math.isfinite(v) for v in values), name


def test_gradients_reach_the_first_step_better_through_an_lstm_than_a_plain_rnn_at_init(study):
    ratio = study[2]["vanishing"]["grad_ratio"]["init"]  # ||dL/dx_0|| / ||dL/dx_T-1||, per seed
    for rnn, lstm, fb1 in zip(ratio["rnn"], ratio["lstm"], ratio["lstm-fb1"]):
        assert rnn < 1e-3 and lstm > rnn and fb1 > 10 * lstm  # vanishing, slower through gates, slower still with bias 1


def test_every_cell_copies_over_a_short_lag_and_the_gru_at_least_as_well_as_the_rnn_over_a_long_one(study):
    acc = study[2]["vanishing"]["accuracy"]
    short, long_ = (str(lag) for lag in MODES["quick"].lags)
    assert all(min(acc[c][short]) > 0.9 for c in acc)
    assert sum(acc["gru"][long_]) >= sum(acc["rnn"][long_]) and min(acc["gru"][long_]) > 0.9


def test_clipping_keeps_a_high_learning_rate_training(study):
    runs = study[2]["exploding"]
    free, clipped = runs["no clipping"], runs["clip 1.0"]
    assert all(c < f for c, f in zip(clipped["tail_loss"], free["tail_loss"]))
    assert sum(clipped["accuracy"]) > sum(free["accuracy"])


def test_parameters_do_not_grow_with_length_and_the_echo_rule_holds_on_longer_sequences(study):
    results = study[2]["sharing"]
    mlp = list(results["mlp_params"].values())
    assert mlp == sorted(mlp) and mlp[-1] > 50 * mlp[0]
    longest = str(MODES["quick"].eval_lengths[-1])
    for cell, acc in results["accuracy"].items():
        assert min(acc[longest]) > 0.9, cell


def test_packing_leaves_valid_outputs_as_a_lone_run_and_padding_moves_the_backward_half(study):
    drift = study[2]["packing"]["drift"]
    assert max(drift["packed"]["forward"] + drift["packed"]["backward"] + drift["padded"]["forward"]) < 1e-5
    assert min(drift["padded"]["backward"]) > 1e-2


def test_only_a_bidirectional_rnn_sees_the_symbol_ahead_at_any_depth(study):
    acc = study[2]["depth"]["accuracy"]
    for layers in ("1 layer", "2 layers", "3 layers"):
        assert max(acc[f"unidirectional, {layers}"]) < 0.35 and min(acc[f"bidirectional, {layers}"]) > 0.6


def test_synthetic_batches():
    gen = torch.Generator().manual_seed(0)
    x, y = recall_batch(8, 5, gen)
    assert x.shape == (8, 5, 4) and (x[:, 0].argmax(-1) == y).all() and x[:, 1:].abs().sum() == 0
    x, y = ahead_batch(8, 6, gen)
    assert (y[:, :-2] == x[:, 2:].argmax(-1)).all() and (y[:, -2:] == -100).all()
    x, y, lengths = next_symbol_batch(8, 12, gen)
    for i, n in enumerate(lengths.tolist()):
        assert x[i, n:].abs().sum() == 0 and (y[i, n:] == -100).all() and y[i, n - 1] == 4
        assert (y[i, :n - 1] == x[i, 1:n].argmax(-1)).all()


def test_unknown_experiment_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--only", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_scheduled_sampling_beats_teacher_forcing_late_in_a_free_rollout(study):
    runs = study[2]["exposure"]
    late = lambda schedule: sum(sum(r[-10:]) for r in runs[schedule]["per_step"])  # noqa: E731
    first = lambda schedule: sum(r[0] for r in runs[schedule]["per_step"])  # noqa: E731
    assert all(len(r) == 30 for s in runs for r in runs[s]["per_step"])
    assert all(math.isfinite(v) for v in _numbers(runs))
    # teacher forcing is the best one-step predictor, and the worst free-running one
    assert first("teacher forcing") < min(first(s) for s in ("linear", "inverse_sigmoid", "exponential"))
    assert late("teacher forcing") > max(late(s) for s in ("linear", "inverse_sigmoid", "exponential"))


def test_exposure_through_the_frames_cli_scores_every_rollout_step_of_every_schedule(study):
    out, report, results = study
    from apps.study import SCHEDULES
    from apps.study_tasks import FRAMES_SIZES

    size = FRAMES_SIZES["quick"]
    per_step = results["exposure_frames"]["per_step"]
    assert set(per_step) == set(SCHEDULES)
    assert all(len(runs) == size.seeds and all(len(r) == size.frames and all(v > 0 for v in r) for r in runs)
               for runs in per_step.values())
    assert "rnnsuite fit --config configs/frames.yaml" in report and "--model.sampling_max 0.0" in report
    for schedule in SCHEDULES:  # each run's own CLI output: its config and final weights
        run = out / "runs" / "exposure_frames" / f"{schedule.replace(' ', '_')}_seed0"
        assert (run / "checkpoints" / "last.ckpt").exists() and (run / "metrics.json").exists()


def test_wandb_gets_every_chart_of_the_report(tmp_path, capsys):
    pytest.importorskip("wandb")
    from tests.wandb_records import history, read_finished_run

    threads = torch.get_num_threads()
    main(["study", "--quick", "--only", "sharing", "--wandb", "--out", str(tmp_path)])
    torch.set_num_threads(threads)
    folder = capsys.readouterr().out.split("wandb run: ")[1].split()[0]
    (run_file,) = [f for f in os.listdir(folder) if f.endswith(".wandb")]
    rows = history(read_finished_run(os.path.join(folder, run_file)))
    logged = {k: json.loads(v) for row in rows for k, v in row.items()}  # media come as nested keys: <key>/_type ...
    charts = re.findall(r"!\[\]\(([^)]+)\.png\)", (tmp_path / "REPORT.md").read_text())
    assert charts and all(logged[f"study/sharing/{c}/_type"] == "image-file" for c in charts)
    assert logged["study/sharing/report/_type"] == "html-file" and logged["study/sharing/seconds"] > 0
