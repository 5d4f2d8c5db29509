"""The Python API: a checkpoint in, predictions out, through the task's own datamodule and `predict_step`.

    from apps.api import load
    model = load("checkpoints/captioning.ckpt")      # the task is read from the checkpoint
    model.predict("photo.png")                          # -> "a small red circle ..."

What `predict` takes and gives, per task (one input gives one result, a list gives a list):

| task | input | result |
|---|---|---|
| captioning | image path, PIL image or (H, W[, 3]) uint8 array | caption |
| activity | video path | top-5 [{label, prob}] |
| phonemes | audio path or (S,) float waveform (`sample_rate=`, default the model's) | {phonemes, segments: [{phoneme, start, end}]} |
| frames | (N, T, H, W[, C]) array of observed frames (uint8 or float in [0, 1]) or a .npy/.npz path | (N, output_frames, H, W[, C]) uint8 forecast |
| charlm | prompt (`length=` characters, default the config's; `seed=`) | prompt + generated text |
| sentiment | sentence | {label, prob} |

These are the records `rnnsuite predict` writes for the same inputs: the model is built from the checkpoint's
hyperparameters (weights_only loading, on the CPU), the data arguments (image size, frames per clip, ...) come from
the task's default config (`config=` for another), and inputs go through the datamodule's predict dataset, its
collate and the task's `predict_step`. In-memory inputs (PIL images, arrays) are written to temporary files
(PNG, float WAV, .npy) that the datamodule reads as it reads yours. A bad input is a one-line ValueError naming it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml

from apps.core import SequenceTask
from apps.tasks import TASKS, TaskSpec
from datamodules.bad_samples import BadSampleError, InputError

#: task name -> its predict function (inputs -> results); every registered task has one (tests/apps/test_api.py)
PREDICT: dict[str, Callable[..., Any]] = {}


def handles(task: str) -> Callable:
    def register(fn: Callable) -> Callable:
        if task in PREDICT:
            raise ValueError(f"task {task!r} has two predict functions (apps/api.py)")
        PREDICT[task] = fn
        return fn
    return register


def load(checkpoint: str, config: str | None = None, **model_options: Any) -> Predictor:
    """A checkpoint of any registered task -> a `Predictor` on the CPU. `model_options` override the checkpoint's
    hyperparameters as `--model.X` does on the command line (`decoding="beam"`, `top_k=1`, `beam_width=1`)."""
    if not os.path.isfile(checkpoint):
        raise ValueError(f"checkpoint {checkpoint} does not exist")
    try:
        hparams = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
    except Exception as err:  # torch raises several types for text, truncated or foreign files
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {checkpoint} is not a readable PyTorch checkpoint ({reason})") from None
    class_path = hparams.get("_class_path")
    spec = next((s for s in TASKS.values() if s.task == class_path), None)
    if spec is None:
        raise ValueError(f"checkpoint {checkpoint} is of {class_path or 'no rnnsuite task'}; the registered tasks are "
                         f"{', '.join(s.task for s in TASKS.values())}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Attribute '.*' is an instance of `nn.Module`")
        model = spec.task_class().load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                       **model_options)
    return Predictor(spec, model.eval(), config or spec.config)


class Predictor:
    """One task's model with its datamodule, ready to predict. `task` is the registry name, `model` the
    LightningModule, `trained_on` what its training data was (generated data knows nothing else)."""

    def __init__(self, spec: TaskSpec, model: SequenceTask, config: str) -> None:
        self.spec, self.task, self.model = spec, spec.name, model
        self._lock = threading.Lock()  # one prediction at a time: they share the datamodule (a web demo's threads)
        self.trained_on: str | None = getattr(model, "trained_on", None)
        with open(config) as f:
            data = (yaml.safe_load(f) or {}).get("data") or {}
        module, _, name = data["class_path"].rpartition(".")
        data_class = getattr(__import__(module, fromlist=[name]), name)
        args = dict(data.get("init_args") or {})
        for data_attr, model_arg in type(model).data_links.items():  # as `rnnsuite predict --ckpt_path` adopts them
            args[data_attr] = model.hparams[model_arg]
        args = {k: v for k, v in args.items() if k in _init_arguments(data_class)}
        self.datamodule = data_class(**args)

    def __repr__(self) -> str:
        return f"Predictor({self.task}: {type(self.model).__name__})"

    def predict(self, inputs: Any, **options: Any) -> Any:
        """Inputs of this task (see the module docstring) -> its results: one for one input, a list for a list."""
        with self._lock, tempfile.TemporaryDirectory(prefix="rnnsuite-api-") as tmp:
            return PREDICT[self.task](self, inputs, tmp, **options)

    def run(self, names: dict[str, str], **predict_inputs: Any) -> list[Any]:
        """The datamodule pointed at `predict_inputs`, then the task's `predict_step` over its predict loader in a
        Trainer (as `rnnsuite predict` runs it) -> the per-batch outputs. `names`: temporary path -> what the
        caller called that input, for error messages."""
        from pytorch_lightning import Trainer

        quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # no "GPU available: ..." per call
        level = quiet.level
        try:
            quiet.setLevel(logging.WARNING)
            self.datamodule.predict_on(**predict_inputs)
            trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                for noise in (r".*does not have many workers.*", r"You have overridden `transfer_batch_to_device`",
                              r"`isinstance\(treespec, LeafSpec\)` is deprecated"):
                    warnings.filterwarnings("ignore", message=noise)
                outputs = trainer.predict(self.model, datamodule=self.datamodule)
        except InputError as err:
            raise ValueError(_named(str(err), names)) from None
        finally:
            quiet.setLevel(level)
            self.datamodule.predict_on(**{k: None for k in predict_inputs if k in ("predict_files",)})
        return outputs or []


def _init_arguments(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _kind(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _named(message: str, names: dict[str, str]) -> str:
    """An error about temporary files, told about the inputs they hold; one line."""
    for tmp, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(tmp, name)
    return " ".join(line.strip() for line in message.splitlines())


def _as_list(inputs: Any, single: Callable[[Any], bool]) -> tuple[list[Any], bool]:
    if single(inputs):
        return [inputs], True
    if isinstance(inputs, (list, tuple)) and inputs:
        return list(inputs), False
    return [inputs], True  # the item's own check names what is wrong with it


def _existing_file(path: Any, what: str, extensions: tuple[str, ...]) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} {'is not a file' if os.path.exists(path) else 'does not exist'}")
    if not path.lower().endswith(extensions):
        raise ValueError(f"{what} {path} is not one of {', '.join(extensions)}")
    return path


def _files(predictor: Predictor, paths: list[str], check: Callable[[str], Any], names: dict[str, str]) -> list[Any]:
    """Every file checked by the datamodule's own reader (a bad one is a ValueError naming it), then predicted
    in one run; the outputs in the order of `paths`, by file name (the sample id of these datamodules)."""
    ids = [os.path.basename(p) for p in paths]
    for path in paths:
        try:
            check(path)
        except BadSampleError as err:
            raise ValueError(f"{names.get(path, path)}: {_named(err.reason, names)}") from None
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"two inputs are named {twice[0]}: predict them in separate calls, or rename one")
    outputs = predictor.run(names, predict_files=paths)
    records: dict[str, Any] = {}
    for batch in outputs:
        records |= batch if isinstance(batch, dict) else {r["file"]: r for r in batch}
    return [records[i] for i in ids]


# --- per task -----------------------------------------------------------------------------------------------
@handles("captioning")
def predict_captions(predictor: Predictor, inputs: Any, tmp: str, attention: bool = False) -> Any:
    """Images -> captions (`attention=True`: {caption, attention}, the image and one heat map per word as an
    (H, W, 3) uint8 strip for an attending decoder, else None)."""
    from PIL import Image

    from datamodules.captioning import IMAGE_EXTENSIONS, load_image

    items, single = _as_list(inputs, lambda x: isinstance(x, (str, os.PathLike, np.ndarray, Image.Image)))
    paths, names = [], {}
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            paths.append(_existing_file(item, "image", IMAGE_EXTENSIONS))
            continue
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
                raise ValueError(f"image array {i} has shape {item.shape} and dtype {item.dtype}; give (H, W) or "
                                 "(H, W, 3) uint8")
            item = Image.fromarray(item)
        if not isinstance(item, Image.Image):
            raise ValueError(f"captioning input {i} is {_kind(item)}; give an image path, a PIL image or "
                             "an (H, W, 3) uint8 array")
        paths.append(os.path.join(tmp, f"image_{i}.png"))  # lossless: the pixels the caller gave
        names[paths[-1]] = f"image {i}"
        item.convert("RGB").save(paths[-1])
    size = predictor.datamodule.image_size
    records = _files(predictor, paths, lambda p: load_image(p, size), names)
    results = [{"caption": r["caption"], "attention": r["attention"]} if attention else r["caption"] for r in records]
    return results[0] if single else results


@handles("activity")
def predict_activity(predictor: Predictor, inputs: Any, tmp: str) -> Any:
    """Video paths -> each one's top-k [{label, prob}]."""
    from datamodules.readers.ucf101 import VIDEO_EXTENSIONS

    items, single = _as_list(inputs, lambda x: isinstance(x, (str, os.PathLike)))
    paths = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            raise ValueError(f"activity input {i} is {_kind(item)}; give a video path")
        paths.append(_existing_file(item, "video", VIDEO_EXTENSIONS))
    results = _files(predictor, paths, predictor.datamodule._decode_for_predict, {})
    return results[0] if single else results


@handles("phonemes")
def predict_phonemes(predictor: Predictor, inputs: Any, tmp: str, sample_rate: int | None = None) -> Any:
    """Audio paths or (S,) float waveforms at `sample_rate` (default the model's) -> {phonemes, segments}."""
    import soundfile

    from datamodules.readers.speech import AUDIO_EXTENSIONS, read_audio

    items, single = _as_list(inputs, lambda x: isinstance(x, (str, os.PathLike, np.ndarray, torch.Tensor)))
    rate = predictor.datamodule.sample_rate
    paths, names = [], {}
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            paths.append(_existing_file(item, "audio file", AUDIO_EXTENSIONS))
            continue
        if not isinstance(item, (np.ndarray, torch.Tensor)):
            raise ValueError(f"phonemes input {i} is {_kind(item)}; give an audio path or an (S,) waveform")
        wave = np.asarray(item.cpu() if isinstance(item, torch.Tensor) else item)
        if wave.ndim == 2 and min(wave.shape) <= 2:  # (S, channels) or (channels, S): mixed down by the reader
            wave = wave if wave.shape[1] <= 2 else wave.T
        if wave.ndim not in (1, 2) or wave.shape[0] == 0:
            raise ValueError(f"waveform {i} has shape {wave.shape}; give (S,) samples (or (S, channels))")
        if np.issubdtype(wave.dtype, np.integer):  # e.g. the int16 samples of a microphone
            wave = wave / float(np.iinfo(wave.dtype).max)
        if not np.isfinite(wave).all():
            raise ValueError(f"waveform {i} holds NaN or infinite samples")
        paths.append(os.path.join(tmp, f"audio_{i}.wav"))
        names[paths[-1]] = f"waveform {i}"
        soundfile.write(paths[-1], wave.astype(np.float32), sample_rate or rate, subtype="FLOAT")
    results = _files(predictor, paths, lambda p: read_audio(p, rate), names)
    return results[0] if single else results


@handles("frames")
def predict_frames(predictor: Predictor, inputs: Any, tmp: str, layout: str = "nthw") -> np.ndarray:
    """(N, T, H, W[, C]) observed frames (`layout="tnhw"` for time first), or a frame file read as `rnnsuite
    predict --data.predict_npy` reads it -> (N, output_frames, H, W[, C]) uint8 forecasts."""
    if isinstance(inputs, (str, os.PathLike)):
        path, names, layout = _existing_file(inputs, "frame file", (".npy", ".npz")), {}, "auto"
    else:
        if not isinstance(inputs, (np.ndarray, torch.Tensor)):
            raise ValueError(f"frames input is {_kind(inputs)}; give an (N, T, H, W) array or a .npy path")
        array = np.asarray(inputs.cpu() if isinstance(inputs, torch.Tensor) else inputs)
        path = os.path.join(tmp, "frames.npy")
        names = {path: f"frames array of shape {tuple(array.shape)}"}
        np.save(path, array)
    outputs = predictor.run(names, predict_npy=path, npy_layout=layout)
    pred = torch.cat([o["prediction"] for o in outputs])  # (N, T, C, H, W) uint8, as write_predictions saves it
    return (pred[:, :, 0] if pred.shape[2] == 1 else pred.movedim(2, -1)).numpy()


@handles("charlm")
def predict_text(predictor: Predictor, inputs: Any, tmp: str, length: int | None = None, seed: int | None = None) -> Any:
    """Prompts -> prompt + `length` generated characters (default the config's `length`); `seed` for repeatable draws."""
    items, single = _as_list(inputs, lambda x: isinstance(x, str))
    length = predictor.datamodule.length if length is None else length
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length {length!r}: give a number of characters >= 0")
    results = []
    for i, prompt in enumerate(items):
        if not isinstance(prompt, str):
            raise ValueError(f"charlm input {i} is {_kind(prompt)}; give a text prompt")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            (output,) = predictor.run({}, prompt=prompt, length=length)
        results.append(next(iter(output.values()))["text"])
    return results[0] if single else results


@handles("sentiment")
def predict_sentiment(predictor: Predictor, inputs: Any, tmp: str) -> Any:
    """Sentences -> {label, prob}."""
    items, single = _as_list(inputs, lambda x: isinstance(x, str))
    for i, sentence in enumerate(items):
        if not isinstance(sentence, str) or not sentence.strip() or "\n" in sentence.strip():
            shown = repr(sentence) if isinstance(sentence, str) else _kind(sentence)
            raise ValueError(f"sentence {i} is {shown}; give a non-empty sentence of one line")
    path = os.path.join(tmp, "sentences.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(s.strip() + "\n" for s in items)
    outputs = predictor.run({path: "sentences"}, predict_file=path)
    merged = {k: v for batch in outputs for k, v in batch.items()}  # ids are <file>:<line>
    results = [{"label": merged[f"{path}:{i + 1}"]["label"], "prob": merged[f"{path}:{i + 1}"]["prob"]}
               for i in range(len(items))]
    return results[0] if single else results

