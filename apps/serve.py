"""`rnnsuite serve`: a Gradio web demo with one tab per task, each the shipped checkpoint behind the Python API
(apps/api.py). Needs the optional extra `serve` (`pip install -e ".[serve]"`; `make install` installs it).

The handlers (`handlers(predictors)`) are plain functions of the widgets' values, so tests call them without a
browser; `build_app` lays them out as gr.Blocks.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from apps.api import Predictor, load
from apps.tasks import REPO, TASKS

CHECKPOINTS = os.path.join(REPO, "checkpoints")


def shipped_tasks() -> list[str]:
    """Registered tasks with a checkpoint under checkpoints/, in registry order."""
    return [t for t in TASKS if os.path.isfile(os.path.join(CHECKPOINTS, f"{t}.ckpt"))]


def load_predictors(tasks: list[str] | None = None) -> dict[str, Predictor]:
    tasks = shipped_tasks() if tasks is None else tasks
    missing = [t for t in tasks if t not in shipped_tasks()]
    if missing:
        raise ValueError(f"no shipped checkpoint for {', '.join(missing)}; choose among {', '.join(shipped_tasks())}")
    return {t: load(os.path.join(CHECKPOINTS, f"{t}.ckpt")) for t in tasks}


def _rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W[, C]) uint8 or float in [0, 1] -> (T, H, W, 3) uint8."""
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    if frames.ndim == 3:
        frames = frames[..., None]
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _labels(top: list[dict[str, Any]]) -> dict[str, float]:
    """[{label, prob}] -> what gr.Label shows."""
    return {r["label"]: r["prob"] for r in top}


def handlers(predictors: dict[str, Predictor], workdir: str | None = None) -> dict[str, dict[str, Callable]]:
    """task -> {handler name: function of the widgets' values}: `predict` for each task, `sample` where the tab
    can draw a generated input. `workdir` holds generated videos and GIFs (default: a temporary folder)."""
    from apps.frames import animation
    from apps.media import save_gif
    from apps.samples import sample_frames, sample_image, sample_speech, sample_video

    workdir = workdir or tempfile.mkdtemp(prefix="rnnsuite-serve-")
    counter = iter(range(10**9))
    out: dict[str, dict[str, Callable]] = {}

    def caption(image: np.ndarray) -> tuple[str, np.ndarray | None]:
        if image is None:
            return "give an image", None
        result = predictors["captioning"].predict(image, attention=True)
        return result["caption"], result["attention"]

    def activity(video: str) -> dict[str, float]:
        if not video:
            return {}
        return _labels(predictors["activity"].predict(video))

    def new_clip(seed: float) -> tuple[str, str]:
        path = os.path.join(workdir, f"clip_{next(counter)}.mp4")
        data = predictors["activity"].datamodule
        label = sample_video(path, int(seed), num_frames=data.num_frames, size=data.image_size)
        return path, f"generated clip of class {label}"

    def phonemes(audio: tuple[int, np.ndarray] | None) -> tuple[str, list[list[Any]]]:
        if audio is None:
            return "give a recording", []
        rate, wave = audio
        result = predictors["phonemes"].predict(wave, sample_rate=rate)
        return result["phonemes"], [[s["phoneme"], s["start"], s["end"]] for s in result["segments"]]

    def speak(text: str) -> tuple[tuple[int, np.ndarray], str]:
        rate = predictors["phonemes"].datamodule.sample_rate
        wave, spoken = sample_speech(text or "the cat sat on the mat", sample_rate=rate)
        return (rate, wave), "espeak-ng's phonemes: " + " ".join(spoken)

    def forecast(frames: np.ndarray | str | None) -> tuple[str | None, str]:
        """(N, T, H, W[, C]) frames (or a .npy/.npz path) -> a GIF of the first sequence: its observed frames,
        then the forecast framed in red (beside the truth when the sequence holds it)."""
        if frames is None:
            return None, "give a .npy file or draw a sequence"
        predictor = predictors["frames"]
        if not isinstance(frames, np.ndarray):
            path = getattr(frames, "name", frames)
            frames = np.load(path) if str(path).endswith(".npy") else None
            if frames is None:
                return None, "give frames as a .npy array (N, T, H, W)"
        if frames.ndim == 3:
            frames = frames[None]  # one (T, H, W) sequence
        pred = predictor.predict(frames)  # ValueError for a file the model cannot read, shown by Gradio
        n_in, n_out = predictor.model.input_frames, predictor.model.output_frames
        truth = frames[0, n_in:n_in + n_out] if frames.shape[1] >= n_in + n_out else None
        gif = os.path.join(workdir, f"forecast_{next(counter)}.gif")
        save_gif(animation(_rgb(frames[0, :n_in]), None if truth is None else _rgb(truth), _rgb(pred[0])), gif)
        told = "left: the truth, right: the model" if truth is not None else "the model"
        return gif, f"{len(pred)} forecast(s) of {n_out} frames from {n_in} observed; shown: sequence 0 ({told})"

    def draw_sequence(seed: float) -> tuple[str | None, str]:
        return forecast(sample_frames(1, int(seed)))

    def generate(prompt: str, length: float) -> str:
        return predictors["charlm"].predict(prompt or "\n", length=int(length))

    def sentiment(sentence: str) -> dict[str, float]:
        if not sentence or not sentence.strip():
            return {}
        result = predictors["sentiment"].predict(sentence)
        other = [c for c in predictors["sentiment"].model.class_names if c != result["label"]]
        return {result["label"]: result["prob"], **({other[0]: round(1 - result["prob"], 6)} if len(other) == 1 else {})}

    table = {
        "captioning": {"predict": caption, "sample": lambda seed: sample_image(int(seed))[0]},
        "activity": {"predict": activity, "sample": new_clip},
        "phonemes": {"predict": phonemes, "sample": speak},
        "frames": {"predict": forecast, "sample": draw_sequence},
        "charlm": {"predict": generate},
        "sentiment": {"predict": sentiment},
    }
    for task in predictors:
        out[task] = table[task]
    return out


def build_app(predictors: dict[str, Predictor], workdir: str | None = None):
    """gr.Blocks with one tab per task in `predictors`."""
    import gradio as gr

    fns = handlers(predictors, workdir)
    with gr.Blocks(title="rnnsuite") as app:
        gr.Markdown("# rnnsuite\nThe shipped checkpoints (checkpoints/) behind the Python API. They were trained on "
                    "generated data (scenes of shapes, motion clips, espeak-ng speech, Moving MNIST) and on "
                    "Shakespeare and movie reviews: expect nonsense on inputs of other kinds.")
        for task, fn in fns.items():
            with gr.Tab(task):
                note = predictors[task].trained_on
                if note:
                    gr.Markdown(f"trained on {note}")
                _TABS[task](gr, fn, predictors[task])
    return app


def _captioning_tab(gr, fn, predictor) -> None:
    with gr.Row():
        image = gr.Image(type="numpy", label="image")
        with gr.Column():
            caption = gr.Textbox(label="caption")
            attends = getattr(predictor.model.decoder, "attention", None) is not None
            overlay = gr.Image(label="attention of each word", visible=attends)
            if not attends:
                gr.Markdown("This checkpoint's decoder does not attend, so there is no attention overlay "
                            "(a checkpoint of configs/captioning_attention.yaml shows one).")
    seed = gr.Number(value=0, label="scene seed", precision=0)
    gr.Button("draw a generated scene").click(fn["sample"], seed, image)
    gr.Button("caption").click(fn["predict"], image, [caption, overlay])


def _activity_tab(gr, fn, predictor) -> None:
    with gr.Row():
        video = gr.Video(label="video")
        labels = gr.Label(num_top_classes=5, label="top 5")
    info = gr.Markdown()
    seed = gr.Number(value=0, label="clip seed", precision=0)
    gr.Button("draw a generated clip").click(fn["sample"], seed, [video, info])
    gr.Button("classify").click(fn["predict"], video, labels)


def _phonemes_tab(gr, fn, predictor) -> None:
    audio = gr.Audio(sources=["upload", "microphone"], type="numpy", label="speech")
    text = gr.Textbox(value="the cat sat on the mat", label="sentence for espeak-ng")
    spoken = gr.Markdown()
    gr.Button("speak it (espeak-ng)").click(fn["sample"], text, [audio, spoken])
    phones = gr.Textbox(label="phonemes")
    times = gr.Dataframe(headers=["phoneme", "start (s)", "end (s)"], label="times (CTC alignment)")
    gr.Button("transcribe").click(fn["predict"], audio, [phones, times])


def _frames_tab(gr, fn, predictor) -> None:
    upload = gr.File(file_types=[".npy"], label="observed frames, .npy (N, T, H, W)")
    gif = gr.Image(label="forecast (framed in red)")
    info = gr.Markdown()
    seed = gr.Number(value=0, label="sequence seed", precision=0)
    gr.Button("forecast the file").click(fn["predict"], upload, [gif, info])
    gr.Button("draw a Moving MNIST sequence and forecast it").click(fn["sample"], seed, [gif, info])


def _charlm_tab(gr, fn, predictor) -> None:
    prompt = gr.Textbox(value="KING.", label="prompt")
    length = gr.Slider(10, 1000, value=300, step=10, label="characters")
    text = gr.Textbox(label="text", lines=12)
    gr.Button("write").click(fn["predict"], [prompt, length], text)


def _sentiment_tab(gr, fn, predictor) -> None:
    sentence = gr.Textbox(value="a gorgeous, witty and moving film", label="sentence")
    label = gr.Label(label="sentiment")
    gr.Button("classify").click(fn["predict"], sentence, label)


_TABS = {"captioning": _captioning_tab, "activity": _activity_tab, "phonemes": _phonemes_tab, "frames": _frames_tab,
         "charlm": _charlm_tab, "sentiment": _sentiment_tab}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rnnsuite serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--tasks", nargs="+", default=None, choices=shipped_tasks(),
                        help="tasks to serve (default: every shipped checkpoint)")
    args = parser.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit('error: rnnsuite serve needs gradio: pip install -e ".[serve]" (make install installs it)')
    app = build_app(load_predictors(args.tasks))
    app.launch(server_name=args.host, server_port=args.port)
