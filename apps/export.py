"""Checkpoints for shipping, and each task's inference path as TorchScript or ONNX.

    python -m apps.export TRAINED.ckpt SHIPPED.ckpt
        keep what evaluation and prediction need (weights, hyperparameters incl. vocabulary/labels, epoch/step),
        drop optimizer, scheduler and callback state.
    python -m apps.export CKPT --format torchscript|onnx [--out FILE]
        the task's inference path (see each task's `export_spec`: its inputs and outputs) traced into FILE
        (default: the checkpoint's name with .pt / .onnx) and FILE.json beside it (task, inputs with their shapes,
        outputs, labels or vocabulary to read the outputs with). The export is checked before it is kept: run on
        other inputs (another batch size) it must give the checkpoint's outputs.

What is exported is the computation from tensors to tensors; reading files (decoding videos, resizing images,
tokenising text) and turning ids into words stay with the caller, as the .json says. Captioning exports greedy
decoding run to `max_caption_len` (beam search is not exported); the character model exports one pass over a
chunk with its recurrent state in and out, the loop that samples from it stays with the caller.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

KEEP = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step", "pytorch-lightning_version")
FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


class ExportSpec(NamedTuple):
    """A task's inference path (`SequenceTask.export_spec`).

    fn:      (modules, *inputs) -> tuple of output tensors; `modules` is the ModuleDict of `modules`.
    modules: the task's modules the path runs (not the LightningModule itself, which tracing cannot walk).
    outputs: output names.
    dynamic: input/output name -> {axis: name} of the axes that vary (the batch, a sequence length).
    meta:    what a caller needs to read the outputs (labels, vocabulary, ...), written to the .json.
    examples: batch size -> named example inputs (traced at 2, checked at 1 and 3).
    onnx:    which of torch.onnx's exporters takes this path: "trace" (TorchScript-based; handles the packed
             variable-length RNNs) or "dynamo" (torch.export; keeps a batch size free that the tracer fixes), or the
             reason there is no ONNX export.
    """

    fn: Callable[..., tuple[Tensor, ...]]
    modules: dict[str, nn.Module]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]
    meta: dict[str, Any]
    examples: Callable[[int], dict[str, Tensor]]
    onnx: str = "trace"


class InferencePath(nn.Module):
    """An ExportSpec as a module: what torch.jit.trace and torch.onnx.export take."""

    def __init__(self, spec: ExportSpec) -> None:
        super().__init__()
        self.parts, self.fn = nn.ModuleDict(spec.modules), spec.fn

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return self.fn(self.parts, *inputs)


def slim(source: str, target: str) -> None:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in checkpoint]
    if missing:
        raise ValueError(f"{source} has no {missing}: is it a checkpoint written by `rnnsuite fit`?")
    kept = {k: checkpoint[k] for k in KEEP if k in checkpoint}
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    torch.save(kept, target)
    print(f"{target}: {os.path.getsize(target) / 1e6:.1f} MB (from {os.path.getsize(source) / 1e6:.1f} MB)")


export = slim  # the name earlier code and the README use


def exported_runner(path: str) -> Callable[[dict[str, Tensor]], list[np.ndarray]]:
    """An exported file (.pt TorchScript or .onnx), loaded once -> named inputs -> its outputs as arrays."""
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, {k: v.numpy() for k, v in inputs.items()})
    module = torch.jit.load(path, map_location="cpu")

    def run(inputs: dict[str, Tensor]) -> list[np.ndarray]:
        with torch.no_grad():
            outputs = module(*inputs.values())
        return [o.numpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]

    return run


def run_exported(path: str, inputs: dict[str, Tensor]) -> list[np.ndarray]:
    """An exported file run once on named inputs -> its outputs as arrays."""
    return exported_runner(path)(inputs)


def export_model(checkpoint: str, fmt: str, target: str | None = None) -> str:
    """Trace `checkpoint`'s inference path into `target` (TorchScript or ONNX), check it, write target.json."""
    from apps.api import load

    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; choose {' or '.join(FORMATS)}")
    target = target or os.path.splitext(checkpoint)[0] + FORMATS[fmt]
    predictor = load(checkpoint)
    spec = predictor.model.export_spec(predictor.datamodule)
    path = InferencePath(spec).eval()
    traced_at = spec.examples(2)
    names, example = list(traced_at), tuple(traced_at.values())
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracers' notes on Python values they fold into constants
        if fmt == "torchscript":
            torch.jit.trace(path, example, check_trace=False).save(target)
        elif spec.onnx == "trace":
            torch.onnx.export(path, example, target, input_names=names, output_names=spec.outputs,
                              dynamic_axes=spec.dynamic, dynamo=False, opset_version=17)
        elif spec.onnx == "dynamo":
            from torch.export import Dim

            shapes = tuple({axis: Dim.AUTO for axis in spec.dynamic.get(name, {})} for name in names)
            with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
                torch.onnx.export(path, example, target, input_names=names, output_names=spec.outputs,
                                  dynamic_shapes=(shapes,), dynamo=True)
        else:
            raise ValueError(f"{predictor.task} has no ONNX export: {spec.onnx}; use --format torchscript")
    # the check: other inputs (another batch size) through the file and through the checkpoint's modules
    worst, run = 0.0, exported_runner(target)
    for batch in (1, 3):
        inputs = spec.examples(batch)
        with torch.no_grad():
            expected = [o.numpy() for o in path(*inputs.values())]
        got = run(inputs)
        for name, e, g in zip(spec.outputs, expected, got):
            if e.shape != g.shape or not np.allclose(e, g, atol=1e-4, rtol=1e-3):
                os.remove(target)
                raise RuntimeError(f"the {fmt} export of {checkpoint} gives other {name!r} than the checkpoint "
                                   f"(batch {batch}): not kept; please report it")
            if e.size:
                worst = max(worst, float(np.abs(e.astype(np.float64) - g.astype(np.float64)).max()))
    info = {"task": predictor.task, "format": fmt, "checkpoint": os.path.abspath(checkpoint),
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""),
                           "dynamic": {str(a): n for a, n in spec.dynamic.get(k, {}).items()}}
                       for k, v in traced_at.items()},
            "outputs": spec.outputs} | spec.meta
    with open(target + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print(f"{target}: {os.path.getsize(target) / 1e6:.1f} MB {fmt} of {predictor.task} ({', '.join(names)} -> "
          f"{', '.join(spec.outputs)}); matches the checkpoint on batches of 1 and 3 (max |diff| {worst:.1e}); "
          f"how to call it: {target}.json")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a checkpoint written by `rnnsuite fit` (or a shipped one)")
    parser.add_argument("target", nargs="?", help="without --format: where the slim checkpoint goes")
    parser.add_argument("--format", choices=list(FORMATS), help="export the inference path instead of slimming")
    parser.add_argument("--out", help="with --format: the exported file (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.source):
        parser.error(f"no checkpoint {args.source}")
    if args.format is None:
        if args.target is None:
            parser.error("give TARGET (slim checkpoint) or --format torchscript|onnx")
        slim(args.source, args.target)
        return
    try:
        export_model(args.source, args.format, args.out or args.target)
    except (ValueError, NotImplementedError, ModuleNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
