"""`rnnsuite fit|validate|test|predict --config configs/<task>.yaml`: one LightningCLI for every task."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from jsonargparse import DefaultHelpFormatter
from pytorch_lightning.loggers import WandbLogger

from apps.core import SequenceTask
from apps.tasks import data_links
from datamodules.bad_samples import BadInputError, InputError, MissingInputError

class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the task list of the epilog kept a line per task."""


class RNNSuiteCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--metrics_json", type=str | None, default=None,
            help="validate/test: write the final metrics to this file as one flat JSON object",
        )
        parser.add_argument(
            "--predictions", type=str | None, default=None,
            help="predict: where to write predictions (default <trainer.default_root_dir>/predictions.json)",
        )
        # the datamodule owns vocabularies and label sets, so YAML never states them a second time
        for data_attr, model_arg in data_links():
            parser.link_arguments(f"data.{data_attr}", f"model.init_args.{model_arg}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        self._raw_args = [str(a) for a in (sys.argv[1:] if args is None else args)]
        super().parse_arguments(parser, args)
        # Runs before LightningCLI copies the checkpoint's hyperparameters into the model config.
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is not None and "weights_only" in config and config.weights_only is None:
            # Load checkpoints without unpickling arbitrary objects; rnnsuite's own hold only tensors and plain data.
            config.weights_only = True
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and str(ckpt_path).startswith("wandb:"):
            ckpt_path = config.ckpt_path = resolve_wandb_artifact(str(ckpt_path))
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            self._adopt_checkpoint(config, ckpt_path, subcommand)
        init_from = config.model.init_args.get("init_from") if subcommand == "fit" and config.get("model") else None
        if init_from:
            # fine-tuning from a checkpoint's weights: the data must give its vocabulary/labels (token ids)
            self._adopt_checkpoint(config, init_from, "fine-tune", what="--model.init_from")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI replaces the model config by the checkpoint's hyperparameters; options the user typed
        on the command line (`--model.decoding beam`) should still win, so they are applied again on top."""
        super()._parse_ckpt_path()
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return
        overrides, args = [], self._raw_args
        for i, arg in enumerate(args):
            if arg.startswith("--model."):
                overrides += [arg] if "=" in arg or i + 1 == len(args) else [arg, args[i + 1]]
        if overrides:
            self.config = self.parser.parse_args([subcommand, *overrides], namespace=self.config)

    def before_instantiate_classes(self) -> None:
        """Outputs go where asked: a fit's wandb run follows --trainer.default_root_dir (unless the logger's own
        save_dir is typed), and evaluation and predict neither open a wandb run (unless a logger is typed) nor
        overwrite the fit's config.yaml."""
        if not self.subcommand:
            return
        trainer, typed = self.config[self.subcommand].trainer, " ".join(self._raw_args)
        logger = trainer.get("logger")
        if self.subcommand != "fit":
            self.save_config_callback = None
            if "--trainer.logger" not in typed:
                trainer.logger = False
        elif logger and not isinstance(logger, bool) and "save_dir" in logger.get("init_args", {}) \
                and "save_dir" not in typed and trainer.get("default_root_dir"):
            logger.init_args.save_dir = trainer.default_root_dir

    @staticmethod
    def _adopt_checkpoint(config, ckpt_path: str, subcommand: str, what: str = "--ckpt_path") -> None:
        """Refuse a checkpoint of another task; when evaluating or fine-tuning (`subcommand` "fine-tune"), let the
        data adopt its vocabulary/labels."""
        if not os.path.isfile(ckpt_path):
            raise MissingInputError(f"{what} {ckpt_path} does not exist")
        try:
            hparams = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
        except Exception as err:  # torch raises RuntimeError/UnpicklingError/... for text, truncated or foreign files
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise BadInputError(f"{what} {ckpt_path} is not a readable PyTorch checkpoint ({reason}); "
                                "pass a .ckpt written by `rnnsuite fit` or checkpoints/<task>.ckpt") from None
        expected, found = config.model.class_path, hparams.get("_class_path")
        if found and found != expected:
            raise BadInputError(
                f"{ckpt_path} is a {found} checkpoint, but the config builds {expected}; "
                "use the config of the task the checkpoint was trained for"
            )
        if subcommand == "fit":
            return
        data_args = config.data.init_args
        for data_attr, model_arg in data_links():
            if model_arg in hparams and data_attr in data_args:
                data_args[data_attr] = hparams[model_arg]

    def _write_metrics(self) -> None:
        metrics = {k: float(v) for k, v in sorted(self.trainer.callback_metrics.items())}
        for key, value in metrics.items():
            print(f"{key}: {value:.4f}")
        path = self.config[self.subcommand].get("metrics_json")
        if path and self.trainer.is_global_zero:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                json.dump(metrics, f, indent=2)
            print(f"metrics written to {path}")

    def after_validate(self) -> None:
        self._write_metrics()

    def after_test(self) -> None:
        self._write_metrics()

    def after_predict(self) -> None:
        outputs = self.trainer.predict_loop.predictions  # this process's batches
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1:
            # under DDP every rank predicted its own share of the data: rank 0 writes all of it
            shares = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shares, outputs)
            outputs = [batch for share in shares for batch in share]
        if not self.trainer.is_global_zero:
            return
        path = self.config.predict.get("predictions") or os.path.join(self.trainer.default_root_dir, "predictions.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        what = self.model.write_predictions(outputs, path)
        print(f"predictions: {what}")
        skipped = getattr(self.datamodule, "skipped", {}).get("predict", [])
        if skipped:  # --data.on_bad_sample skip: what was not predicted, by name
            print(f"skipped {len(skipped)} bad input{'s' if len(skipped) > 1 else ''} (not predicted): " + "; ".join(skipped))

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        logger = self.trainer.logger
        if isinstance(logger, WandbLogger):
            run_dir = os.path.dirname(logger.experiment.dir)  # .../wandb/offline-run-<id>/files -> the run folder
            logger.experiment.finish()
            print(f"wandb run: {run_dir}  (upload it with: wandb sync {run_dir})")
        elif logger is not None and logger.log_dir:
            print(f"logs: {logger.log_dir}")
        ckpt = self.trainer.checkpoint_callback
        best = (ckpt.best_model_path or ckpt.last_model_path) if ckpt is not None else ""
        print(f"best checkpoint: {best or '(none saved: checkpointing is off)'}", flush=True)


def resolve_wandb_artifact(spec: str) -> str:
    """`wandb:ENTITY/PROJECT/NAME:VERSION` -> the path of the checkpoint file inside the downloaded model artifact
    (what `--trainer.logger.log_model true` uploads when logging online)."""
    name = spec.removeprefix("wandb:")
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise RuntimeError(
            f"--ckpt_path {spec} needs the wandb API, but WANDB_MODE={os.environ['WANDB_MODE']}; unset it and "
            "`wandb login`, or download the artifact elsewhere and pass its .ckpt file"
        )
    import wandb

    try:
        folder = wandb.Api().artifact(name, type="model").download()
    except Exception as err:  # wandb raises several types for offline, unknown artifact and auth problems
        raise RuntimeError(
            f"could not fetch the wandb artifact {name!r} ({type(err).__name__}: {err}); check the name "
            "(ENTITY/PROJECT/NAME:VERSION), your network and `wandb login`, or pass a local .ckpt file"
        ) from err
    ckpts = sorted(f for f in os.listdir(folder) if f.endswith(".ckpt"))
    if not ckpts:
        raise FileNotFoundError(f"the wandb artifact {name!r} (downloaded to {folder}) holds no .ckpt file")
    return os.path.join(folder, ckpts[0])


def list_tasks() -> str:
    """`rnnsuite tasks`: what the registries hold (tasks with their configs and main metric, encoders, decoders)."""
    import decoders
    from apps.tasks import TASKS
    from encoders import get_encoder_class, list_encoders

    lines = ["tasks (rnnsuite fit --config configs/<config>):"]
    for name, spec in TASKS.items():
        lines.append(f"  {name:<11} {spec.task}  metric {spec.metric} ({'higher' if spec.higher_is_better else 'lower'} "
                     f"is better)  configs: {', '.join(spec.configs)}")
    lines.append("encoders (class_path encoders.<Class>): " + ", ".join(get_encoder_class(n).__name__ for n in list_encoders()))
    heads = sorted(n for n in decoders.__all__ if isinstance(getattr(decoders, n), type) and issubclass(getattr(decoders, n), torch.nn.Module))
    lines.append("decoders (class_path decoders.<Class>): " + ", ".join(heads))
    lines.append("options of one: rnnsuite fit --config configs/<config> --print_config; --model.help <class_path>")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["tasks"]:
        print(list_tasks())
        return
    if argv[:1] == ["serve"]:  # the web demo (apps/serve.py): its own options, no LightningCLI
        from apps.serve import main as serve

        serve(argv[1:])
        return
    if argv[:1] == ["study"]:  # plain-PyTorch experiments on synthetic sequences, not a LightningCLI subcommand
        from apps.study import main as study

        study(argv[1:])
        return
    if any(a == "--optimizer" or a.startswith(("--optimizer=", "--optimizer.", "--lr_scheduler")) for a in argv):
        # LightningCLI's own --optimizer would silently replace the task's optimizer, warm-up and schedule
        sys.exit("error: the optimizer is the task's: --model.optimizer adamw|adam|sgd, --model.lr, "
                 "--model.weight_decay, --model.scheduler none|cosine|plateau, --model.warmup_steps")
    in_process = args is not None  # tests: exceptions propagate
    completed = help_of_the_configs_task(argv)
    if not in_process:
        sys.argv[1:] = completed  # LightningCLI reads sys.argv itself
    cli_args = completed if in_process else None
    warnings.filterwarnings("ignore", message=r"Attribute '.*' is an instance of `nn.Module`")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        RNNSuiteCLI(
            SequenceTask,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the task's configure_optimizers (warm-up, schedule) is the only one
            parser_kwargs={"description": "rnnsuite: recurrent networks for captioning, activity, phonemes, future "
                           "frames, character-level text and sentiment. `rnnsuite tasks` lists the tasks, their "
                           "configs, encoders and decoders; `rnnsuite fit --config configs/<task>.yaml` trains one; "
                           "`rnnsuite serve` starts the web demo of the shipped checkpoints; "
                           "`rnnsuite study [--quick]` runs the recurrent-network experiments (REPORT.md).",
                           "epilog": list_tasks(), "formatter_class": HelpFormatter},
            args=cli_args,
        )
    except Exception as err:
        problem = input_error(err)
        if problem is None or in_process:
            raise  # a bug: the whole traceback; called in-process (tests): the exception itself
        sys.exit(f"error: {problem}")  # bad input (a file, folder or option): its message (what, where, fix) alone


def help_of_the_configs_task(argv: list[str]) -> list[str]:
    """`--config configs/x.yaml --model.help` with no class: the help of the config's task, not of the base class."""
    if "--model.help" not in argv:
        return argv
    i = argv.index("--model.help")
    if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        return argv
    configs = [argv[j + 1] for j, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    if not configs:
        return argv
    import yaml

    with open(configs[-1]) as f:
        task = ((yaml.safe_load(f) or {}).get("model") or {}).get("class_path")
    return [*argv[:i + 1], task, *argv[i + 1:]] if task else argv


def input_error(err: BaseException) -> InputError | None:
    """The `InputError` a datamodule or this CLI raised on purpose for bad input, when `err` is one or wraps one
    (jsonargparse re-raises a datamodule's error from __init__ as "Does not validate against any of the Union
    subtypes", chained with `from`); None for anything else, which is a bug to show in full."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InputError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


if __name__ == "__main__":
    main()
