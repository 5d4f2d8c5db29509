"""`python -m apps.export CKPT --format torchscript|onnx`: every task's inference path exported from its shipped
checkpoint gives the checkpoint's outputs on inputs the export never saw (onnxruntime for ONNX)."""
import json
import os

import numpy as np
import pytest
import torch

from apps.api import load
from apps.export import main as export_main
from apps.export import run_exported
from decoders.search import sample

CKPT = os.path.join(os.path.dirname(__file__), "..", "..", "checkpoints")


def reference(model, inputs):
    """The checkpoint's own forward (not the exported path) on the same inputs."""
    task = type(model).__name__
    with torch.no_grad():
        if task == "CaptioningTask":  # greedy decoding, stopping when every caption has ended
            g = sample(model.decoder, model.encoder(inputs["images"]), model.vocab.bos_id, model.vocab.eos_id,
                       model.max_caption_len)
            return [g.tokens, g.lengths]
        if task == "CharLMTask":
            state = (inputs["h"], inputs["c"]) if "c" in inputs else inputs["h"]
            logits, out = model(inputs["chars"], state)
            return [logits, *(out if isinstance(out, tuple) else (out,))]
        out = model(*inputs.values())
    return list(out) if isinstance(out, tuple) else [out]


CASES = [(t, f) for t in ("activity", "sentiment", "charlm", "frames", "captioning", "phonemes")
         for f in ("torchscript", "onnx") if (t, f) != ("phonemes", "onnx")]


@pytest.mark.parametrize("task,fmt", CASES)
def test_export_matches_the_checkpoint(tmp_path, capsys, task, fmt):
    target = str(tmp_path / f"{task}.{fmt}")
    export_main([os.path.join(CKPT, f"{task}.ckpt"), "--format", fmt, "--out", target])
    assert "matches the checkpoint" in capsys.readouterr().out
    info = json.load(open(target + ".json"))
    assert info["task"] == task and info["outputs"]
    model = load(os.path.join(CKPT, f"{task}.ckpt")).model.eval()
    spec = model.export_spec(load(os.path.join(CKPT, f"{task}.ckpt")).datamodule)
    inputs = spec.examples(4)  # a batch size the export was neither traced nor checked at
    assert list(inputs) == list(info["inputs"])
    got, expected = run_exported(target, inputs), reference(model, inputs)
    assert len(got) == len(expected) == len(info["outputs"])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-3)


def test_phonemes_onnx_is_refused_with_the_reason(tmp_path):
    with pytest.raises(SystemExit, match="no ONNX export.*STFT.*torchscript"):
        export_main([os.path.join(CKPT, "phonemes.ckpt"), "--format", "onnx", "--out", str(tmp_path / "p.onnx")])


def test_an_export_that_differs_is_not_kept(tmp_path, monkeypatch):
    import apps.export as export

    real = export.exported_runner
    monkeypatch.setattr(export, "exported_runner", lambda path: lambda inputs: [o + 1.0 for o in real(path)(inputs)])
    target = tmp_path / "frames.pt"
    with pytest.raises(RuntimeError, match="other 'forecast' than the checkpoint"):
        export.export_model(os.path.join(CKPT, "frames.ckpt"), "torchscript", str(target))
    assert not target.exists()


def test_slimming_still_works_and_needs_a_target(tmp_path):
    export_main([os.path.join(CKPT, "frames.ckpt"), str(tmp_path / "slim.ckpt")])
    assert set(torch.load(tmp_path / "slim.ckpt", weights_only=True)) >= {"state_dict", "hyper_parameters"}
    with pytest.raises(SystemExit):
        export_main([os.path.join(CKPT, "frames.ckpt")])
