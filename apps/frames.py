"""Future-frame prediction (sequence-to-sequence): ConvLSTM / PredRNN-family encoder-forecaster, MSE/MAE/SSIM/PSNR
against two trivial baselines (copy the last input frame, predict blank frames) measured in the same run."""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from apps.core import SequenceTask, Stage
from apps.media import log_animation, log_image, save_gif, to_uint8
from datamodules.bad_samples import BadInputError
from datamodules.frames import FrameBatch
from decoders.convlstm import ConvLSTMForecaster
from decoders.schedules import SamplingSchedule, sampling_probability

_PER_FRAME = ("mse", "mae", "mse_copy_last", "mse_blank", "ssim", "psnr")


def frame_errors(pred: Tensor, truth: Tensor, last_input: Tensor) -> dict[str, Tensor]:
    """(B, T, C, H, W) predictions and truth in [0, 1], (B, C, H, W) last observed frame -> per-sequence (B,) scores.

    Literature convention (ConvLSTM, PredRNN, OpenSTL): squared/absolute error summed over a frame's pixels,
    averaged over the predicted frames; SSIM and PSNR per frame, averaged likewise.
    """
    B, T = pred.shape[:2]
    errors = {"mse": (pred - truth) ** 2, "mae": (pred - truth).abs(), "mse_copy_last": (last_input[:, None] - truth) ** 2,
              "mse_blank": truth**2}  # (B, T, C, H, W) each
    flat_pred, flat_truth = pred.flatten(0, 1).float(), truth.flatten(0, 1).float()
    ssim = structural_similarity_index_measure(flat_pred, flat_truth, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(flat_pred, flat_truth, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {name: e.flatten(2).sum(-1).mean(1) for name, e in errors.items()} | {
        "ssim": ssim.view(B, T).mean(1), "psnr": psnr.clamp(max=100.0).view(B, T).mean(1)}  # a perfect frame: PSNR inf, capped


class FrameErrors(Metric):
    """`frame_errors` averaged over all sequences, plus `mse_vs_blank` = mse / mse_blank (below 1: the model beats
    predicting empty frames; copying the last input frame is the other baseline). With `output_frames`, also the
    MSE of each rollout step, `mse_step01` ..., how errors compound as the forecast feeds on its own frames."""

    full_state_update = False

    def __init__(self, output_frames: int | None = None) -> None:
        super().__init__()
        for name in _PER_FRAME:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.output_frames = output_frames
        if output_frames:
            self.add_state("mse_steps", default=torch.zeros(output_frames, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, last_input: Tensor) -> None:
        for name, values in frame_errors(preds, target, last_input).items():
            setattr(self, name, getattr(self, name) + values.double().sum())
        if self.output_frames:
            if preds.shape[1] != self.output_frames:
                raise ValueError(f"FrameErrors(output_frames={self.output_frames}) got {preds.shape[1]} predicted frames")
            self.mse_steps += ((preds - target) ** 2).flatten(2).sum(-1).double().sum(0)  # (T,) summed over sequences
        self.count += preds.shape[0]

    def compute(self) -> dict[str, Tensor]:
        values = {name: (getattr(self, name) / self.count.clamp(min=1)).float() for name in _PER_FRAME}
        if self.output_frames:
            steps = (self.mse_steps / self.count.clamp(min=1)).float()
            values |= {f"mse_step{t + 1:02d}": steps[t] for t in range(self.output_frames)}
        return values | {"mse_vs_blank": values["mse"] / values["mse_blank"].clamp(min=1e-8)}


STRIP_MARGIN = 70  # pixels left of the frames for the row names


def strip(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, gap: int = 2) -> np.ndarray:
    """(T_in, H, W, 3), (T_out, H, W, 3) x 2 -> one picture: input | truth | prediction, one row each (input |
    prediction when the truth is unknown), each row named in a margin on the left."""
    from PIL import Image, ImageDraw

    named = [("input", inputs), ("prediction", pred)] if truth is None else [("input", inputs), ("truth", truth), ("prediction", pred)]
    T, H, W = max(len(f) for _, f in named), inputs.shape[1], inputs.shape[2]
    canvas = np.full((len(named) * H + (len(named) - 1) * gap, STRIP_MARGIN + T * (W + gap) - gap, 3), 128, np.uint8)
    canvas[:, :STRIP_MARGIN] = 255
    for row, (_, frames) in enumerate(named):
        for t, frame in enumerate(frames):
            x = STRIP_MARGIN + t * (W + gap)
            canvas[row * (H + gap) : row * (H + gap) + H, x : x + W] = frame
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for row, (name, _) in enumerate(named):
        draw.text((4, row * (H + gap) + H // 2 - 5), name, fill=(0, 0, 0))
    return np.asarray(picture)


def animation(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, scale: int = 2) -> list[np.ndarray]:
    """GIF frames: truth on the left, the model on the right (inputs, then its predictions framed in red); the
    model alone when the truth is unknown."""
    framed, edge = pred.copy(), np.ones(pred.shape[1:3], bool)  # (T_out, H, W, 3), (H, W)
    edge[2:-2, 2:-2] = False
    framed[:, edge] = (255, 0, 0)
    both = right = np.concatenate([inputs, framed])  # (T, H, W, 3)
    if truth is not None:
        left = np.concatenate([inputs, truth])
        both = np.concatenate([left, np.full((*left.shape[:2], 2, 3), 128, np.uint8), right], axis=2)
    return list(both.repeat(scale, axis=1).repeat(scale, axis=2))


class FramePredictionTask(SequenceTask):
    """Predict the next `output_frames` frames from `input_frames` observed ones; validation sequences are drawn
    as strips and GIFs (`num_logged_samples`).

    Args:
        decoder: the forecaster; `frame_channels` is filled in from the data.
        frame_channels: channels of a frame (from the datamodule).
        input_frames: observed frames per sequence (from the datamodule).
        output_frames: predicted frames per sequence (from the datamodule).
        l1_weight: loss = MSE + l1_weight * L1 (per pixel).
        context_weight: weight of the next-frame loss over the observed frames (extra signal at no extra cost).
        sampling_schedule: how the probability of feeding the model its own prediction grows in training:
            linear, inverse_sigmoid or exponential (evaluation always feeds its own predictions).
        sampling_start: fraction of training (steps or max_time, whichever is nearer) before which the truth is fed.
        sampling_end: fraction of training from which the probability is `sampling_max`.
        sampling_max: final probability of feeding the model's own prediction.
        reverse_scheduled_sampling: PredRNN-V2's reverse scheduled sampling: in training, each observed frame after
            the first is replaced by the model's own prediction of it with a probability that falls from
            `reverse_sampling_max` to 0 (the chance of reading the true frame rises to 1, as at evaluation), so the
            encoder learns early to work from its own predictions; logged as train/reverse_sampling_prob.
            Evaluation always reads the true observed frames.
        reverse_sampling_schedule: the shape of the fall (`sampling_schedule`'s shapes, mirrored): exponential
            falls fast first, as the paper's 0.5 exp(-k / alpha) (flat to 31 % of training, ~0 by 45 % there;
            the defaults come close).
        reverse_sampling_start: fraction of training up to which the probability stays `reverse_sampling_max`.
        reverse_sampling_end: fraction of training from which it is 0.
        reverse_sampling_max: the starting probability (0.5 in the paper).
    """

    main_metric = "val/mse"
    main_metric_mode = "min"
    data_links = {"frame_channels": "frame_channels", "input_frames": "input_frames", "output_frames": "output_frames"}

    def __init__(
        self,
        decoder: Callable[[int], ConvLSTMForecaster],
        frame_channels: int = 1,
        input_frames: int = 10,
        output_frames: int = 10,
        l1_weight: float = 0.0,
        context_weight: float = 1.0,
        sampling_schedule: SamplingSchedule = "linear",
        sampling_start: float = 0.0,
        sampling_end: float = 0.7,
        sampling_max: float = 1.0,
        reverse_scheduled_sampling: bool = False,
        reverse_sampling_schedule: SamplingSchedule = "exponential",
        reverse_sampling_start: float = 0.3,
        reverse_sampling_end: float = 0.9,
        reverse_sampling_max: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.decoder = decoder(frame_channels)
        self.frame_channels, self.input_frames, self.output_frames = frame_channels, input_frames, output_frames
        self.l1_weight, self.context_weight = l1_weight, context_weight
        self.schedule = (sampling_schedule, sampling_start, sampling_end, sampling_max)
        sampling_probability(0.0, *self.schedule)  # fail at start-up on a bad schedule
        self.reverse_schedule = (reverse_sampling_schedule, reverse_sampling_start, reverse_sampling_end,
                                 reverse_sampling_max) if reverse_scheduled_sampling else None
        if self.reverse_schedule:
            if not 0.0 < reverse_sampling_max <= 1.0:
                raise ValueError(f"reverse_sampling_max must be in (0, 1], got {reverse_sampling_max}")
            sampling_probability(0.0, *self.reverse_schedule)

    def build_metrics(self, stage: Stage) -> dict[str, Metric]:
        # the error of each rollout step at test (`rnnsuite test --metrics_json`), not in every validation's log
        return {"frames": FrameErrors(self.output_frames if stage == "test" else None)}

    def split(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, C, H, W) -> observed (B, input_frames, ...), future (B, output_frames, ...)."""
        need = self.input_frames + self.output_frames
        if frames.shape[1] < need:
            raise ValueError(f"sequences have {frames.shape[1]} frames; this model needs {need} (input + output frames)")
        return frames[:, : self.input_frames], frames[:, self.input_frames : need]

    def export_spec(self, datamodule: Any) -> Any:
        """(B, input_frames, C, H, W) observed frames in [0, 1] -> (B, output_frames, C, H, W) forecast."""
        from apps.export import ExportSpec

        C, S = self.hparams.get("frame_channels") or 1, getattr(datamodule, "frame_size", 64)

        def examples(batch: int) -> dict[str, Tensor]:
            return {"observed": torch.rand(batch, self.input_frames, C, S, S, generator=torch.Generator().manual_seed(batch))}

        return ExportSpec(lambda m, observed: (m["decoder"](observed, self.output_frames).future,),
                          {"decoder": self.decoder}, ["forecast"],
                          {"observed": {0: "batch"}, "forecast": {0: "batch"}},
                          {"observed": f"{self.input_frames} frames, {C} channel(s) of {S}x{S} in [0, 1]",
                           "output_frames": self.output_frames}, examples, onnx="dynamo")

    def forward(self, observed: Tensor) -> Tensor:
        """(B, input_frames, C, H, W) -> (B, output_frames, C, H, W): a rollout on the model's own predictions only."""
        return self.decoder(observed, self.output_frames).future

    def compute_loss(self, batch: FrameBatch, stage: Stage) -> tuple[Tensor, Tensor | None]:
        observed, future = self.split(batch.frames)
        if stage == "train":
            forecast = self.decoder(observed, self.output_frames, targets=future,
                                    sampling_prob=self.sampling_prob(*self.schedule),
                                    reverse_sampling_prob=self.reverse_sampling_prob())
        else:  # evaluation never sees the future frames (they are only compared against) and reads true observed ones
            forecast = self.decoder(observed, self.output_frames)
        loss = self.frame_loss(forecast.future, future) + forecast.aux_loss  # + PredRNN-V2's decoupling loss if weighted
        if self.context_weight and forecast.context.shape[1]:
            loss = loss + self.context_weight * self.frame_loss(forecast.context, observed[:, 1:])
        return loss, forecast.future

    def reverse_sampling_prob(self) -> float:
        """Reverse scheduled sampling: the probability, now, of reading an observed frame's own prediction instead of
        the frame; falls from `reverse_sampling_max` to 0. 0 when it is off."""
        if self.reverse_schedule is None:
            return 0.0
        schedule, start, end, max_prob = self.reverse_schedule
        prob = max_prob * (1.0 - sampling_probability(self.training_progress(), schedule, start, end))
        self.log("train/reverse_sampling_prob", prob, on_step=True, on_epoch=False)
        return prob

    def frame_loss(self, pred: Tensor, truth: Tensor) -> Tensor:
        return F.mse_loss(pred, truth) + (self.l1_weight * F.l1_loss(pred, truth) if self.l1_weight else 0.0)

    def metric_inputs(self, batch: FrameBatch, forecast: Tensor, stage: Stage) -> dict[str, Any]:
        observed, future = self.split(batch.frames)
        return {"preds": forecast, "target": future, "last_input": observed[:, -1]}

    def media_samples(self, batch: FrameBatch, forecast: Tensor, limit: int) -> list[tuple]:
        observed, future = self.split(batch.frames[:limit])
        return list(zip(to_uint8(observed), to_uint8(future), to_uint8(forecast[:limit])))

    def log_media(self, stage: Stage, samples: list[tuple], values: dict[str, Tensor]) -> None:
        if stage == "val":  # one line per validation: readable with the progress bar off
            names = ("mse", "mse_blank", "mse_copy_last", "ssim")
            print(f"step {self.global_step}: " + ", ".join(f"val/{n} {float(values[n]):.4g}" for n in names), flush=True)
        folder = self.media_folder() if samples else None  # test draws nothing: no empty media/ folder
        for i, (obs, true, pred) in enumerate(samples):
            log_image(self.logger, f"val/strip_{i}", strip(obs, true, pred), self.global_step, "input | truth | prediction")
            gif = os.path.join(folder, f"val_step{self.global_step:06d}_{i}.gif")
            save_gif(animation(obs, true, pred), gif)
            log_animation(self.logger, f"val/animation_{i}", gif, self.global_step)

    def on_predict_start(self) -> None:
        """Frames this model cannot read are refused before any forecast, naming the file."""
        data = self.trainer.datamodule
        path = data.source("predict") if hasattr(data, "source") else None
        if path is None:
            return
        H, W = data.dataset("predict")[0][0].shape[-2:]
        p = self.decoder.patch_size
        if H % p or W % p:
            raise BadInputError(f"{path}: frames of {H}x{W} pixels, but this model folds frames into {p}x{p} patches; "
                                f"crop or pad them to multiples of {p}")

    def predict_step(self, batch: FrameBatch, batch_idx: int) -> dict[str, Any]:
        """A forecast of `output_frames` from the first `input_frames` of each sequence; scored when the sequences
        also hold the `output_frames` after those (a test file), not when they hold only the observed frames."""
        given = batch.frames.shape[1]
        observed = batch.frames[:, : self.input_frames]
        pred = self(observed)
        future = batch.frames[:, self.input_frames : self.input_frames + self.output_frames]
        future = future if future.shape[1] == self.output_frames else None
        keep = max(0, self.num_logged_samples * 4 - batch_idx * len(pred))  # sequences drawn as strips and GIFs
        truths = to_uint8(future[:keep]) if future is not None else [None] * len(pred[:keep])
        return {"ids": batch.ids, "given_frames": given, "prediction": (pred.clamp(0, 1) * 255).round().byte().cpu(),
                "scores": None if future is None else
                {name: v.cpu() for name, v in frame_errors(pred, future, observed[:, -1]).items()},
                "media": list(zip(to_uint8(observed[:keep]), truths, to_uint8(pred[:keep])))}

    def write_predictions(self, outputs: list[dict[str, Any]], path: str) -> str:
        """`path` X.json: a summary X.json, and beside it a folder X/ with predictions.npy (uint8 (N, T_out, H, W[, C]),
        rows in the summary's `ids` order) and strips/GIFs; `path` without .json is that folder, summary inside."""
        if path.endswith(".json"):
            summary_path, folder = path, path[: -len(".json")]
        else:
            folder, summary_path = path, os.path.join(path, "predictions.json")
        os.makedirs(folder, exist_ok=True)
        pred = torch.cat([o["prediction"] for o in outputs])  # (N, T, C, H, W)
        array_path = os.path.join(folder, "predictions.npy")
        array = (pred[:, :, 0] if pred.shape[2] == 1 else pred.movedim(2, -1)).numpy()  # (N, T, H, W[, C])
        np.save(array_path, array)
        ids, media = [sid for o in outputs for sid in o["ids"]], [m for o in outputs for m in o["media"]]
        given = outputs[0]["given_frames"]
        source = self.trainer.datamodule.source("predict") if self._trainer is not None else None
        context = (f"the first {self.input_frames} of {given} frames of each sequence" if given > self.input_frames
                   else f"all {given} frames of each sequence")
        summary: dict[str, Any] = {
            "source": source, "num_sequences": len(ids), "context": context, "input_frames": self.input_frames,
            "output_frames": self.output_frames, "predictions": array_path, "prediction_shape": list(array.shape),
            "ids": ids,
        }
        scored = ""
        if outputs[0]["scores"] is not None:
            scores = {name: torch.cat([o["scores"][name] for o in outputs]) for name in _PER_FRAME}
            summary |= {f"test/{name}": float(v.mean()) for name, v in scores.items()}
            summary |= {"test/mse_vs_blank": summary["test/mse"] / max(summary["test/mse_blank"], 1e-8),
                        "per_sequence": {sid: {n: round(float(scores[n][i]), 4) for n in _PER_FRAME} for i, sid in enumerate(ids)}}
            scored = (f"; scored against the next {self.output_frames} frames: mse {summary['test/mse']:.2f} "
                      f"(blank {summary['test/mse_blank']:.2f}, copy-last {summary['test/mse_copy_last']:.2f})")
        elif given > self.input_frames:
            scored = (f"; not scored: the {given - self.input_frames} frames after them are fewer than the "
                      f"{self.output_frames} forecast")
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=1)
        for i, (obs, true, p) in enumerate(media):
            Image.fromarray(strip(obs, true, p)).save(os.path.join(folder, f"strip_{i:03d}.png"))
            save_gif(animation(obs, true, p), os.path.join(folder, f"sequence_{i:03d}.gif"))
        return (f"{len(ids)} forecasts of {self.output_frames} frames from {context}{f' of {source}' if source else ''}"
                f"{scored}\n  written to {summary_path} (summary), {array_path} (uint8 {tuple(summary['prediction_shape'])}) "
                f"and {len(media)} strips/GIFs in {folder}/")
