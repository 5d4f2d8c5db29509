"""The Python API (apps/api.py): for every shipped checkpoint, `load` + `predict` gives what `rnnsuite predict`
writes for the same inputs, and a bad input is a one-line ValueError naming it."""
import json

import numpy as np
import pytest
import soundfile

from apps.api import PREDICT, load
from apps.samples import sample_frames, sample_image, sample_speech, sample_video
from apps.tasks import TASKS
from datamodules.readers.speech import read_audio
from tests.conftest import REPO, TINY_TRAINER, run_cli

PRESENT = sorted(p.stem for p in (REPO / "checkpoints").glob("*.ckpt"))


def ckpt(task: str) -> str:
    return str(REPO / "checkpoints" / f"{task}.ckpt")


def cli_predict(task: str, tmp_path, *args: str) -> str:
    """`rnnsuite predict` of the shipped checkpoint, in this process -> the path it wrote."""
    out = str(tmp_path / "cli.json")
    run_cli("predict", "--config", TASKS[task].config, *TINY_TRAINER, "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", ckpt(task), *args, "--predictions", out)
    return out


# task -> (tmp_path -> (what `rnnsuite predict` wrote, read back, and what the API returned), compared equal)
def captioning(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pictures = [sample_image(seed)[0] for seed in range(3)]
    for i, picture in enumerate(pictures):
        from PIL import Image

        Image.fromarray(picture).save(folder / f"scene{i}.png")
    cli = json.loads(open(cli_predict("captioning", tmp_path, "--data.predict_dir", str(folder))).read())
    # a path, a numpy array and a PIL image: the same pixels
    from PIL import Image

    api = load(ckpt("captioning")).predict([str(folder / "scene0.png"), pictures[1], Image.fromarray(pictures[2])])
    return [cli[f"scene{i}.png"] for i in range(3)], api


def activity(tmp_path):
    folder = tmp_path / "videos"
    for i in range(2):
        sample_video(str(folder / f"clip{i}.mp4"), seed=i)
    cli = json.loads(open(cli_predict("activity", tmp_path, "--data.predict_dir", str(folder))).read())
    api = load(ckpt("activity")).predict([str(folder / f"clip{i}.mp4") for i in range(2)])
    assert len(api[0]) == 5 and api[0][0]["prob"] > 0.5  # a generated clip of the training kind: a confident top 1
    return [cli[f"clip{i}.mp4"] for i in range(2)], api


def phonemes(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    wave, spoken = sample_speech("the cat sat on the mat")
    soundfile.write(folder / "cat.wav", wave, 16000, subtype="PCM_16")
    cli = json.loads(open(cli_predict("phonemes", tmp_path, "--data.predict_dir", str(folder))).read())
    model = load(ckpt("phonemes"))
    from_path = model.predict(str(folder / "cat.wav"))
    from_array = model.predict(read_audio(str(folder / "cat.wav")).numpy())  # the samples the reader gives
    assert from_path == from_array and from_path["segments"][0]["start"] == 0.0
    return cli["cat.wav"], from_path


def frames(tmp_path):
    observed = sample_frames(2)[:, :10]  # (2, 10, 64, 64) uint8: observed frames only
    np.save(tmp_path / "seen.npy", observed)
    cli_predict("frames", tmp_path, "--data.predict_npy", str(tmp_path / "seen.npy"))
    api = load(ckpt("frames")).predict(observed)
    assert api.shape == (2, 10, 64, 64) and api.dtype == np.uint8
    return np.load(tmp_path / "cli" / "predictions.npy").tolist(), api.tolist()


def charlm(tmp_path):
    # top_k 1: the likeliest character every step, so both draw the same text whatever the random state
    cli = json.loads(open(cli_predict("charlm", tmp_path, "--data.prompt", "KING.", "--data.length", "60",
                                      "--model.top_k", "1")).read())
    api = load(ckpt("charlm"), top_k=1).predict("KING.", length=60)
    assert api.startswith("KING.") and len(api) == 65
    return cli["sample_0"]["text"], api


def sentiment(tmp_path):
    sentences = ["a gorgeous, witty and moving film", "dull, tedious and far too long", "it is a movie"]
    (tmp_path / "sentences.txt").write_text("\n".join(sentences) + "\n")
    cli = json.loads(open(cli_predict("sentiment", tmp_path, "--data.predict_file", str(tmp_path / "sentences.txt"))).read())
    api = load(ckpt("sentiment")).predict(sentences)
    assert [r["label"] for r in api[:2]] == ["positive", "negative"]
    return [{"label": r["label"], "prob": r["prob"]} for r in cli], api


CASES = {f.__name__: f for f in (captioning, activity, phonemes, frames, charlm, sentiment)}


def test_every_registered_task_has_a_predict_function_and_a_case_here():
    assert set(PREDICT) == set(TASKS) and set(CASES) == set(TASKS)


@pytest.mark.parametrize("task", PRESENT)
def test_load_and_predict_give_what_rnnsuite_predict_writes(task, tmp_path):
    cli, api = CASES[task](tmp_path)
    assert api == cli


def write_garbage(path):
    path.write_bytes(b"not a picture, a clip or a sound")
    return str(path)


# task -> (tmp_path -> bad input, words the message must hold)
BAD = {
    "captioning": (lambda tmp: write_garbage(tmp / "broken.png"), ["broken.png", "cannot read image"]),
    "activity": (lambda tmp: write_garbage(tmp / "broken.mp4"), ["broken.mp4", "unreadable video"]),
    "phonemes": (lambda tmp: write_garbage(tmp / "broken.wav"), ["broken.wav", "cannot read audio"]),
    "frames": (lambda tmp: sample_frames(1)[:, :4], ["frames array of shape (1, 4, 64, 64)", "10 observed frames"]),
    "charlm": (lambda tmp: 42, ["charlm input 0 is an int", "prompt"]),
    "sentiment": (lambda tmp: ["fine", "  "], ["sentence 1", "non-empty"]),
}


@pytest.mark.parametrize("task", PRESENT)
def test_a_bad_input_is_a_one_line_error_naming_it(task, tmp_path):
    make, words = BAD[task]
    with pytest.raises(ValueError) as info:
        load(ckpt(task)).predict(make(tmp_path))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and all(w in message for w in words), message
    assert "rnnsuite-api-" not in message  # temporary files are named by what the caller gave


def test_a_missing_input_and_a_file_that_is_not_a_checkpoint_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"image .*nowhere\.png does not exist"):
        load(ckpt("captioning")).predict(str(tmp_path / "nowhere.png"))
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load(str(REPO / "README.md"))
    with pytest.raises(ValueError, match="does not exist"):
        load(str(tmp_path / "none.ckpt"))


def test_predictions_from_several_threads_are_each_their_own():
    """A web demo calls one Predictor from several threads; they share its datamodule, so they take turns."""
    from concurrent.futures import ThreadPoolExecutor

    model = load(ckpt("sentiment"))
    sentences = ["dull, tedious and far too long", "a gorgeous, witty and moving film"] * 3
    expected = [model.predict(s) for s in sentences]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(model.predict, sentences)) == expected
