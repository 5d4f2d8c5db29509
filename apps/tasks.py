"""The task registry: every rnnsuite task, once. The CLI's data->model links, `make demo`, the benchmarks and the
per-task tests iterate `TASKS`; adding a task is a task file, a datamodule, a config and one `register` call below."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Args:
        name: `configs/<name>.yaml` is its default config, `checkpoints/<name>.ckpt` its shipped checkpoint.
        task: import path of its LightningModule (the default config's `model.class_path`).
        metric: the test metric the demo table and the shipped-checkpoint check show.
        higher_is_better: the metric's direction.
        tiny: command-line overrides that make one step of the default config cheap (tests, benchmarks --quick).
        test_size_arg: the data argument that sets the number of test samples ("" when the test set is a file).
        media: what validation logs to wandb besides scalars: key -> wandb media type.
        shipped_check: overrides that keep the shipped checkpoint's test quick (a slice of the test set).
        shipped_bound: what the shipped checkpoint must reach on that slice.
        variants: the task's other shipped configs -> overrides added to `tiny` for them.
    """

    name: str
    task: str
    metric: str
    higher_is_better: bool
    tiny: tuple[str, ...]
    test_size_arg: str
    media: dict[str, str] = field(default_factory=dict)
    shipped_check: tuple[str, ...] = ()
    shipped_bound: float | None = None
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def config(self) -> str:
        return os.path.join(REPO, "configs", f"{self.name}.yaml")

    @property
    def configs(self) -> dict[str, tuple[str, ...]]:
        """Every config of this task (file name -> its tiny overrides), the default first."""
        return {f"{self.name}.yaml": self.tiny, **{name: (*self.tiny, *extra) for name, extra in self.variants.items()}}

    def task_class(self) -> type:
        module, _, name = self.task.rpartition(".")
        return getattr(importlib.import_module(module), name)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task; a second task of the same name, or one without its config files, is refused."""
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice (apps/tasks.py)")
    for name in spec.configs:
        if not os.path.isfile(os.path.join(REPO, "configs", name)):
            raise FileNotFoundError(f"task {spec.name!r}: configs/{name} does not exist")
    TASKS[spec.name] = spec
    return spec


def data_links() -> list[tuple[str, str]]:
    """(datamodule attribute, task argument) pairs of every registered task, for the CLI to link."""
    pairs = {pair for spec in TASKS.values() for pair in spec.task_class().data_links.items()}
    return sorted(pairs)


register(TaskSpec(
    name="captioning", task="apps.captioning.CaptioningTask", metric="test/bleu4", higher_is_better=True,
    tiny=("--data.num_train_scenes", "32", "--data.num_val_scenes", "8", "--data.num_test_scenes", "8",
          "--data.batch_size", "8"),
    test_size_arg="--data.num_test_scenes",
    media={"val/samples": "table-file"},
    shipped_check=("--trainer.limit_test_batches", "4"), shipped_bound=0.70,
    # the pretrained config at 64 px: the EfficientNet runs at any size, and its features are cached
    # scst fine-tunes checkpoints/captioning.ckpt (the data adopts its vocabulary, so the tiny data works)
    variants={"captioning_attention.yaml": (), "captioning_pretrained.yaml": ("--data.image_size", "64"),
              "captioning_scst.yaml": (), "captioning_updown.yaml": ()},
))
register(TaskSpec(
    name="activity", task="apps.activity.ActivityTask", metric="test/acc", higher_is_better=True,
    tiny=("--data.num_train_clips", "16", "--data.num_val_clips", "8", "--data.num_test_clips", "8",
          "--data.num_frames", "4", "--data.image_size", "16", "--data.batch_size", "8"),
    test_size_arg="--data.num_test_clips",
    media={"val/confusion_matrix": "images/separated", "val/clips": "table-file"},
    shipped_check=("--trainer.limit_test_batches", "4"), shipped_bound=0.90,
    variants={"activity_single_frame.yaml": (), "activity_pretrained.yaml": ("--data.image_size", "32")},
))
register(TaskSpec(
    name="phonemes", task="apps.phonemes.PhonemeTask", metric="test/per", higher_is_better=False,
    tiny=("--data.num_train_utterances", "16", "--data.num_val_utterances", "4", "--data.num_test_utterances", "4",
          "--data.batch_size", "4"),
    test_size_arg="--data.num_test_utterances",
    media={"val/samples": "table-file", "val/samples_audio": "audio"},
    shipped_check=("--data.num_train_utterances", "16", "--data.num_val_utterances", "4",
                   "--data.num_test_utterances", "48"),
    shipped_bound=0.10,
))
register(TaskSpec(
    name="frames", task="apps.frames.FramePredictionTask", metric="test/mse_vs_blank", higher_is_better=False,
    tiny=("--data.num_train_sequences", "8", "--data.num_val_sequences", "4", "--data.num_test_sequences", "4",
          "--data.batch_size", "4", "--trainer.val_check_interval", "null", "--trainer.check_val_every_n_epoch", "1"),
    test_size_arg="--data.num_test_sequences",
    media={"val/strip_0": "images/separated", "val/animation_0": "video-file"},
    shipped_check=("--data.num_test_sequences", "64"), shipped_bound=0.85,
    variants={"frames_predrnn.yaml": ()},
))
register(TaskSpec(
    name="charlm", task="apps.charlm.CharLMTask", metric="test/bpc", higher_is_better=False,
    tiny=("--data.train_chars", "20000", "--data.val_chars", "2000", "--data.test_chars", "2000",
          "--data.batch_size", "4", "--data.bptt", "16", "--model.decoder.hidden_dim", "32",
          "--model.sample_length", "20", "--trainer.val_check_interval", "null"),
    test_size_arg="--data.test_chars",
    shipped_check=("--data.test_chars", "50000"), shipped_bound=2.5,  # the slice: 2.287 bpc
    media={"val/samples": "table-file"},
))
register(TaskSpec(
    name="sentiment", task="apps.sentiment.SentimentTask", metric="test/acc", higher_is_better=True,
    tiny=("--data.num_train_sentences", "64", "--data.num_val_sentences", "16", "--data.num_test_sentences", "16",
          "--data.batch_size", "8", "--model.encoder.embed_dim", "16", "--model.decoder.hidden_dim", "16"),
    test_size_arg="--data.num_test_sentences",
    shipped_check=("--data.num_test_sentences", "400"), shipped_bound=0.75,
    media={"val/confusion_matrix": "images/separated", "val/misclassified": "table-file"},
))
