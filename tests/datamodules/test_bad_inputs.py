"""Bad inputs for every reader. Each case gets an error naming the file (and line or entry) and what to do, or,
with on_bad_sample="skip", a counted skip while the rest of the data still loads. Fixtures are written here."""
from __future__ import annotations

import csv
import json
import os
import re
import wave

import numpy as np
import pytest
from PIL import Image

from datamodules.activity import ActivityDataModule
from datamodules.bad_samples import BadInputError, BadSampleError, InputError, SkippedBatch
from datamodules.captioning import CaptioningDataModule
from datamodules.frames import FramesDataModule
from datamodules.phonemes import PhonemeDataModule
from datamodules.readers.speech import read_audio, read_timit
from datamodules.readers.ucf101 import read_split
from tests.conftest import CONFIGS, TINY_CAPTIONING, TINY_TRAINER, cli_error, run_cli
from tests.datamodules.test_activity_data import write_video
from tests.datamodules.test_phoneme_data import tone, write_riff, write_sphere

SKIP_HINT = "or pass --data.on_bad_sample skip"


def raises_naming(fn, *parts: str, skippable: bool = True) -> BadSampleError:
    """`fn()` raises a BadSampleError whose message holds every one of `parts` (file, line, reason, fix)."""
    with pytest.raises(BadSampleError) as info:
        fn()
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert (SKIP_HINT in message) == skippable
    return info.value


# --- captioning: Karpathy and COCO JSON ----------------------------------------------------------------------
def write_image(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)


def write_captions(tmp_path, fmt: str, case: str | None) -> tuple[dict, str]:
    """Three training images (the first one "bad.jpg" made bad by `case`), one val, one test.
    -> (CaptioningDataModule kwargs, the JSON file holding the bad entry)."""
    images = tmp_path / "images"
    images.mkdir()
    names = ["bad.jpg", "good1.jpg", "good2.jpg", "val.jpg", "test.jpg"]
    for i, name in enumerate(names):
        write_image(images / name, i)
    bad = images / "bad.jpg"
    if case == "missing_image":
        bad.unlink()
    elif case == "truncated_image":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif case == "not_an_image":
        bad.write_bytes(b"this is not an image")
    captions = ["" if case == "empty_caption" and n == "bad.jpg" else f"a picture of {n[:-4]}" for n in names]
    if fmt == "karpathy":
        splits = ["train", "train", "restval", "val", "test"]
        path = tmp_path / "dataset.json"
        path.write_text(json.dumps({"images": [
            {"filename": n, "split": s, "imgid": n[:-4], "sentences": [{"tokens": c.split()}]}
            for n, s, c in zip(names, splits, captions)
        ]}))
        return dict(karpathy_json=str(path), image_root=str(images), image_size=16, batch_size=8), str(path)
    files = {}
    for split, picked in (("train", range(3)), ("val", [3])):
        files[split] = tmp_path / f"captions_{split}.json"
        files[split].write_text(json.dumps({
            "images": [{"id": i, "file_name": names[i]} for i in picked],
            "annotations": [{"image_id": i, "id": i, "caption": captions[i]} for i in picked],
        }))
    return dict(coco_train_json=str(files["train"]), coco_val_json=str(files["val"]), coco_train_images=str(images),
                coco_val_images=str(images), image_size=16, batch_size=8), str(files["train"])


@pytest.mark.parametrize("fmt", ["karpathy", "coco"])
@pytest.mark.parametrize(("case", "reason", "fix"), [
    ("missing_image", "image not found", "check --data.image_root"),
    ("empty_caption", "bad.jpg has no non-empty caption", "remove"),
])
def test_caption_entries_bad_when_indexing(tmp_path, fmt, case, reason, fix):
    kwargs, json_path = write_captions(tmp_path, fmt, case)
    raises_naming(lambda: CaptioningDataModule(**kwargs), f"{json_path} images[0]: ", reason, fix)
    with pytest.warns(UserWarning, match="train captions: skipped 1 of 3 samples"):
        dm = CaptioningDataModule(**kwargs, on_bad_sample="skip")
    assert len(dm.skipped["train"]) == 1 and dm.skipped["train"][0].startswith(f"{json_path} images[0] ({reason}")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape[0] == 2 and batch.skipped == ()


@pytest.mark.parametrize("fmt", ["karpathy", "coco"])
@pytest.mark.parametrize("case", ["truncated_image", "not_an_image"])
def test_caption_images_bad_when_loading(tmp_path, fmt, case):
    kwargs, _ = write_captions(tmp_path, fmt, case)
    bad = str(tmp_path / "images" / "bad.jpg")
    dm = CaptioningDataModule(**kwargs)  # the file exists: only decoding finds the problem
    raises_naming(lambda: next(iter(dm.train_dataloader())), f"{bad}: cannot read image", "replace or remove it")
    dm = CaptioningDataModule(**kwargs, on_bad_sample="skip")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape[0] == 2  # the rest of the batch still loads
    assert len(batch.skipped) == 1 and batch.skipped[0].startswith(f"{bad} (cannot read image")
    # a batch of nothing but bad samples: no batch to train on, the skip still travels
    dm = CaptioningDataModule(**{**kwargs, "batch_size": 1}, on_bad_sample="skip")
    dataset, collate = dm.dataset("train"), dm.train_dataloader().collate_fn
    bad_index = next(i for i in range(len(dataset)) if dataset.records[i].image_path == bad)
    assert collate([dataset[bad_index]]) == SkippedBatch((batch.skipped[0],))


@pytest.mark.parametrize("fmt", ["karpathy", "coco"])
def test_caption_json_missing_or_malformed(tmp_path, fmt):
    kwargs, json_path = write_captions(tmp_path, fmt, None)
    os.remove(json_path)
    with pytest.raises(FileNotFoundError, match=rf"not found: {json_path}; pass .*--data\.(karpathy|coco_train)_json"):
        CaptioningDataModule(**kwargs)
    with open(json_path, "w") as f:
        f.write('{"images": [')
    with pytest.raises(ValueError, match=rf"{json_path}: not valid JSON"):
        CaptioningDataModule(**kwargs)


def test_a_missing_data_file_is_one_line_through_the_cli(tmp_path, monkeypatch):
    """A datamodule's error in __init__ reaches main() wrapped by jsonargparse; what it prints is the error alone."""
    missing = tmp_path / "missing.json"
    message = cli_error(monkeypatch, "fit", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER,
                        "--trainer.default_root_dir", str(tmp_path), "--data.karpathy_json", str(missing), max_lines=1)
    assert f"not found: {missing}; pass " in message and "Union" not in message


# --- predict folders (captioning, activity, phonemes) -------------------------------------------------------
def predict_folder(tmp_path, task: str):
    """-> (a datamodule for `predict_dir=`, file extension, a good file's bytes writer, bad files {name: bytes})."""
    if task == "captioning":
        make = lambda **kw: CaptioningDataModule(num_train_scenes=4, num_val_scenes=2, num_test_scenes=2, image_size=16, **kw)  # noqa: E731
        return make, "png", lambda path: write_image(path), {"truncated.png": "half", "text.png": b"not an image"}
    if task == "activity":
        make = lambda **kw: ActivityDataModule(num_frames=2, image_size=16, cache_dir=str(tmp_path / "cache"), **kw)  # noqa: E731
        return make, "mp4", lambda path: write_video(path, 3, (90, 40, 200), size=(16, 16)), {
            "truncated.mp4": "half", "text.mp4": b"not a video"}
    make = lambda **kw: PhonemeDataModule(phonemes=["a", "b"], **kw)  # noqa: E731
    return make, "wav", lambda path: write_riff(path, tone(1600), 16000), {
        "truncated.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ", "empty.wav": "empty", "text.wav": b"not audio"}


def fill_predict_folder(folder, ext, write_good, bad: dict) -> None:
    """Two good files, the bad ones (bytes, "half" of a good file, or "empty": a valid file without samples)."""
    folder.mkdir()
    for name in (f"good1.{ext}", f"good2.{ext}"):
        write_good(folder / name)
    for name, contents in bad.items():
        if contents == "half":
            whole = (folder / f"good1.{ext}").read_bytes()
            (folder / name).write_bytes(whole[: len(whole) // 2])
        elif contents == "empty":
            write_riff(folder / name, np.zeros(0, np.int16), 16000)
        else:
            (folder / name).write_bytes(contents)
    (folder / "notes.txt").write_text("not listed: another extension")


TASKS_WITH_PREDICT_FOLDERS = ["captioning", "activity", "phonemes"]
KINDS = {"captioning": "images (.jpg, .jpeg, .png", "activity": "video files (.avi, .mp4", "phonemes": "audio files (.wav"}


@pytest.mark.parametrize("task", TASKS_WITH_PREDICT_FOLDERS)
def test_a_missing_or_empty_predict_folder_is_one_line_naming_it_and_the_files_expected(tmp_path, task):
    make, *_ = predict_folder(tmp_path, task)
    for folder, what in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "(it is empty)"),
                         (tmp_path / "texts", "(it holds 1 other files, e.g. a.txt)")):
        if folder.name != "nowhere":
            folder.mkdir()
        if folder.name == "texts":
            (folder / "a.txt").write_text("x")
        with pytest.raises(InputError) as info:  # what rnnsuite prints alone, without a traceback
            make(predict_dir=str(folder)).predict_dataloader()
        message = str(info.value)
        assert str(folder) in message and what in message and KINDS[task] in message and "\n" not in message
    with pytest.raises(InputError, match=rf"rnnsuite predict needs --data.predict_dir DIR, a folder of {re.escape(KINDS[task])}"):
        make().predict_dataloader()


@pytest.mark.parametrize("task", TASKS_WITH_PREDICT_FOLDERS)
def test_bad_predict_files_are_all_named_in_one_error_or_all_skipped(tmp_path, task):
    make, ext, write_good, bad = predict_folder(tmp_path, task)
    folder = tmp_path / "inputs"
    fill_predict_folder(folder, ext, write_good, bad)
    with pytest.raises(BadInputError) as info:
        make(predict_dir=str(folder)).predict_dataloader()
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0].startswith(f"{len(bad)} of {len(bad) + 2} ") and f"in --data.predict_dir {folder} cannot be read: " in lines[0]
    assert all(name in lines[0] for name in bad) and "good1" not in message  # every bad file, not only the first
    assert len(lines) <= len(bad) + 2 and "pass --data.on_bad_sample skip to predict the others" in lines[-1]

    dm = make(predict_dir=str(folder), on_bad_sample="skip")
    batch = next(iter(dm.predict_dataloader()))
    assert sorted(batch.ids if task != "activity" else batch.ids) == [f"good1.{ext}", f"good2.{ext}"]
    assert sorted(s.split(" (")[0] for s in dm.skipped["predict"]) == sorted(bad)  # counted, named, with a reason
    assert all(str(tmp_path) not in s for s in dm.skipped["predict"])  # short names: the folder is said once


def test_a_predict_folder_of_only_bad_files_is_an_error_even_when_skipping(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"no")
    with pytest.raises(BadInputError, match=r"1 of 1 images in --data.predict_dir .* cannot be read: a.png(.|\n)*none of them"):
        predict_folder(tmp_path, "captioning")[0](predict_dir=str(folder), on_bad_sample="skip").predict_dataloader()


def test_predict_through_the_cli_skips_and_lists_bad_files_or_stops_naming_them(tmp_path, capsys, monkeypatch):
    """What a user sees: with skip, the good files' captions and, after them, each bad file by name; with the
    default, a few lines naming every bad file and no traceback (and no predictions file); an empty folder: one line."""
    common = ["--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER, *TINY_CAPTIONING, "--data.image_size", "16"]
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1")
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    make, ext, write_good, bad = predict_folder(tmp_path, "captioning")
    fill_predict_folder(tmp_path / "inputs", ext, write_good, bad)
    predict = ["predict", *common, "--ckpt_path", ckpt, "--trainer.default_root_dir", str(tmp_path / "run"),
               "--data.predict_dir", str(tmp_path / "inputs")]
    capsys.readouterr()
    run_cli(*predict, "--data.on_bad_sample", "skip", "--predictions", str(tmp_path / "skip.json"))
    assert set(json.loads((tmp_path / "skip.json").read_text())) == {"good1.png", "good2.png"}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("skipped 2 bad inputs (not predicted): text.png (cannot read image")
    assert "; truncated.png (cannot read image (image file is truncated))" in last

    message = cli_error(monkeypatch, *predict, "--predictions", str(tmp_path / "stop.json"), max_lines=5)
    assert message.startswith(f"error: 2 of 4 images in --data.predict_dir {tmp_path / 'inputs'} cannot be read: "
                              "text.png, truncated.png")
    assert not (tmp_path / "stop.json").exists()
    (tmp_path / "none").mkdir()
    message = cli_error(monkeypatch, *predict[:-2], "--data.predict_dir", str(tmp_path / "none"), max_lines=1)
    assert message == f"error: no images (.jpg, .jpeg, .png, .bmp, .webp) in --data.predict_dir {tmp_path / 'none'} (it is empty)"


# --- activity: UCF101 / HMDB51 folders and split files ------------------------------------------------------
def write_ucf(tmp_path, bad_line: str = "") -> dict:
    """Classes A and B, one training and one test video each (6 frames of 16 x 16), plus `bad_line` appended to
    trainlist01.txt (line 3). -> ActivityDataModule kwargs."""
    root, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir()
    for rel in ("A/a1.mp4", "B/b1.mp4", "A/a2.mp4", "B/b2.mp4", "A/a3.mp4"):
        write_video(root / rel, 6, (90, 40, 200), size=(16, 16))
    (splits / "classInd.txt").write_text("1 A\n2 B\n")
    (splits / "trainlist01.txt").write_text("A/a1.mp4 1\nB/b1.mp4 2\n" + bad_line)
    (splits / "testlist01.txt").write_text("A/a2.mp4\nB/b2.mp4\n")
    return dict(video_root=str(root), split_dir=str(splits), num_frames=4, image_size=16, batch_size=4,
                val_fraction=0.0, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(("bad_line", "reason", "fix"), [
    ("A/gone.mp4 1\n", "A/gone.mp4 is not under", "check --data.video_root, or remove the line"),
    ("C/c1.mp4 3\n", "class 'C' of C/c1.mp4 is not in classInd.txt", "add it there or remove the line"),
    ("A/a3.mp4 2\n", "label 2 of A/a3.mp4 disagrees with classInd.txt", "fix the label"),
], ids=["missing_video", "unknown_class", "wrong_label"])
def test_split_file_lines_bad_when_indexing(tmp_path, bad_line, reason, fix):
    kwargs = write_ucf(tmp_path, bad_line)
    trainlist = os.path.join(kwargs["split_dir"], "trainlist01.txt")
    raises_naming(lambda: ActivityDataModule(**kwargs), f"{trainlist}:3: {reason}", fix)
    with pytest.warns(UserWarning, match="train split-file lines: skipped 1 samples"):
        dm = ActivityDataModule(**kwargs, on_bad_sample="skip")
    assert len(dm.skipped["train"]) == 1 and dm.skipped["train"][0].startswith(f"{trainlist}:3 ({reason}")
    assert len(dm.dataset("train")) == 2 and next(iter(dm.train_dataloader())).frames.shape[0] == 2


@pytest.mark.parametrize(("case", "reason", "fix"), [
    ("corrupt", "unreadable video", "re-encode or remove the file"),
    ("truncated", "unreadable video", "re-encode or remove the file"),
    ("short", "video shorter than the clip (2 < 4 frames)", "lower --data.num_frames"),
])
def test_videos_bad_when_decoding(tmp_path, case, reason, fix):
    kwargs = write_ucf(tmp_path, "A/bad.mp4 1\n")
    bad = os.path.join(kwargs["video_root"], "A", "bad.mp4")
    if case == "short":
        write_video(bad, 2, (0, 0, 0), size=(16, 16))
    elif case == "truncated":
        write_video(bad, 6, (0, 0, 0), size=(16, 16))
        with open(bad, "r+b") as f:
            f.truncate(os.path.getsize(bad) // 2)
    else:
        with open(bad, "wb") as f:
            f.write(b"not a video at all")
    dm = ActivityDataModule(**kwargs)
    raises_naming(lambda: dm.dataset("train"), f"{bad}: {reason}", fix)
    dm = ActivityDataModule(**kwargs, on_bad_sample="skip")
    with pytest.warns(UserWarning, match="train videos: skipped 1 of 3 samples"):
        assert len(dm.dataset("train")) == 2
    assert len(dm.skipped["train"]) == 1 and dm.skipped["train"][0].startswith(f"{bad} ({reason}")


def test_hmdb_malformed_split_line(tmp_path):
    root, split_dir = tmp_path / "hmdb", tmp_path / "splits"
    write_video(root / "run" / "r1.mp4", 4, (1, 2, 3), size=(16, 16))
    split_dir.mkdir()
    split_file = split_dir / "run_test_split1.txt"
    split_file.write_text("r1.mp4 1\nr2.mp4 7\n")
    raises_naming(lambda: read_split(str(root), str(split_dir), 1), f"{split_file}:2: expected '<clip> <0|1|2>'",
                  "fix or remove the line")
    _, splits, skipped = read_split(str(root), str(split_dir), 1, policy="skip")
    assert len(splits["train"]) == 1 and len(skipped["train"]) == 1


# --- phonemes: JSONL manifests, audio files, TIMIT -----------------------------------------------------------
def write_manifest(tmp_path, bad_line: str) -> str:
    """Line 1 and 3 good, line 2 = `bad_line`; the audio files a.wav, b.wav (and bad.wav) beside it."""
    for i, name in enumerate(("a.wav", "b.wav", "bad.wav")):
        write_riff(tmp_path / name, tone(1600, i), 16000)
    lines = [json.dumps({"audio": "a.wav", "phonemes": "a b"}), bad_line, json.dumps({"audio": "b.wav", "phonemes": "b c"})]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(("bad_line", "reason", "fix"), [
    ('{"audio": "bad.wav", "phonemes": ', "not valid JSON", "fix or remove the line"),
    ('{"audio": "bad.wav"}', 'the line needs "audio" and either "phonemes" or "text"', "add them or remove the line"),
    ('{"audio": "gone.wav", "phonemes": "a"}', "audio file not found", "fix the path"),
    ('{"audio": "bad.wav", "phonemes": ""}', "empty phoneme sequence", "fill it in or remove the line"),
    ('{"audio": "bad.wav", "text": ""}', "empty phoneme sequence", "fill it in or remove the line"),
    ('{"audio": "bad.wav", "text": "hello qzxvvbw"}', "words not in the CMU dictionary: qzxvvbw", "--data.skip_oov true"),
], ids=["malformed_json", "missing_fields", "missing_audio", "empty_phonemes", "empty_text", "unknown_word"])
def test_manifest_lines_bad_when_indexing(tmp_path, bad_line, reason, fix):
    manifest = write_manifest(tmp_path, bad_line)
    raises_naming(lambda: PhonemeDataModule(train_manifest=manifest), f"{manifest}:2: {reason}", fix)
    with pytest.warns(UserWarning, match="train utterances: skipped 1 of 3 samples"):
        dm = PhonemeDataModule(train_manifest=manifest, batch_size=4, on_bad_sample="skip")
    assert len(dm.skipped["train"]) == 1 and dm.skipped["train"][0].startswith(f"{manifest}:2 ({reason}")
    assert next(iter(dm.train_dataloader())).audio.shape[0] == 2


def write_bad_audio(path, case: str) -> None:
    if case == "garbage":
        path.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    elif case == "truncated_header":
        path.write_bytes(path.read_bytes()[:20])
    elif case == "zero_length":
        write_riff(path, np.zeros(0, np.int16), 16000)
    elif case == "sphere_shorten":  # a compressed SPHERE file: no conversion possible here
        write_sphere(path, tone(800), 16000)
        path.write_bytes(path.read_bytes().replace(b"end_head", b"sample_coding -s7 shorten\nend_head", 1))


@pytest.mark.parametrize(("case", "reason"), [
    ("garbage", "cannot read audio"),
    ("truncated_header", "cannot read audio"),
    ("zero_length", "zero-length audio"),
    ("sphere_shorten", "cannot read audio (SPHERE sample_coding 'shorten' is not supported"),
])
def test_audio_bad_when_loading(tmp_path, case, reason):
    manifest = write_manifest(tmp_path, json.dumps({"audio": "bad.wav", "phonemes": "a c"}))
    bad = tmp_path / "bad.wav"
    write_bad_audio(bad, case)
    dm = PhonemeDataModule(train_manifest=manifest, batch_size=4)
    raises_naming(lambda: next(iter(dm.train_dataloader())), f"{bad}: {reason}")
    dm = PhonemeDataModule(train_manifest=manifest, batch_size=4, on_bad_sample="skip")
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio.shape[0] == 2 and len(batch.skipped) == 1 and batch.skipped[0].startswith(f"{bad} ({reason}")


def test_wrong_sample_rate_and_channels_are_converted(tmp_path):
    """Not bad samples: 8 kHz stereo becomes 16 kHz mono."""
    left = tone(4000)
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(np.stack([left, left], 1).astype("<i2").tobytes())
    audio = read_audio(str(tmp_path / "stereo.wav"), 16000)
    assert audio.shape == (8000,)  # resampled x2, one channel
    mono = read_audio(str(tmp_path / "stereo.wav"), 8000).numpy()
    assert np.corrcoef(mono, left)[0, 1] > 0.999  # both channels equal: the mix follows them


def write_timit(root, case: str) -> str:
    """One good and one bad training utterance, one val and one test utterance -> the bad one's path stem."""
    for parts in (("TRAIN", "DR1", "FCJF0", "SI1"), ("TRAIN", "DR1", "FCJF0", "SI2"), ("TEST", "DR1", "MDAB0", "SX1"),
                  ("TEST", "DR2", "FAKS0", "SX2")):
        folder = root.joinpath(*parts[:3])
        folder.mkdir(parents=True, exist_ok=True)
        write_riff(folder / f"{parts[3]}.WAV", tone(1600), 16000)
        (folder / f"{parts[3]}.PHN").write_text("0 800 h#\n800 1600 ao\n")
    stem = root / "TRAIN" / "DR1" / "FCJF0" / "SI2"
    if case == "missing_phn":
        os.remove(f"{stem}.PHN")
    elif case == "malformed_line":
        (root / f"{stem}.PHN").write_text("0 800 h#\n800 x ao\n")
    else:
        (root / f"{stem}.PHN").write_text("0 800 h#\n800 1600 zz\n")
    return str(stem)


@pytest.mark.parametrize(("case", "where", "reason"), [
    ("missing_phn", ".WAV", "no .PHN transcription beside it"),
    ("malformed_line", ".PHN:2", 'expected "start end phone"'),
    ("unknown_phone", ".PHN:2", "phone 'zz' is not one of TIMIT's 61"),
])
def test_timit_transcriptions_bad_when_indexing(tmp_path, case, where, reason):
    stem = write_timit(tmp_path, case)
    raises_naming(lambda: read_timit(str(tmp_path)), f"{stem}{where}: {reason}")
    with pytest.warns(UserWarning, match="train utterances: skipped 1 of 2 samples"):
        dm = PhonemeDataModule(timit_root=str(tmp_path), on_bad_sample="skip")
    assert [r.utt_id for r in dm.records["train"]] == ["FCJF0_SI1"] and len(dm.skipped["train"]) == 1


def test_training_phoneme_outside_the_given_inventory(tmp_path):
    manifest = write_manifest(tmp_path, json.dumps({"audio": "bad.wav", "phonemes": "a x"}))
    dm = PhonemeDataModule(train_manifest=manifest, phonemes=["a", "b", "c"])
    raises_naming(lambda: dm.dataset("train"), f"{tmp_path / 'bad.wav'}: phonemes x are not in the model's inventory")
    dm = PhonemeDataModule(train_manifest=manifest, phonemes=["a", "b", "c"], on_bad_sample="skip")
    assert len(dm.dataset("train")) == 2 and len(dm.skipped["train"]) == 1


# --- frames: .npy / .npz arrays -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["garbage.npy", "truncated.npy", "truncated.npz", "missing.npy"])
def test_frame_files_unreadable(tmp_path, case):
    path = tmp_path / case
    frames = np.zeros((4, 20, 8, 8), np.uint8)
    if case == "garbage.npy":
        path.write_bytes(b"not numpy")
    elif case.startswith("truncated"):
        (np.save if case.endswith(".npy") else np.savez)(path, frames)
        path.write_bytes(path.read_bytes()[:200])
    if case == "missing.npy":  # a whole file: nothing to skip to, an error in both modes
        with pytest.raises(FileNotFoundError, match=f"frame file {path} does not exist"):
            FramesDataModule(test_npy=str(path), on_bad_sample="skip")
    else:
        with pytest.raises(ValueError, match=rf"{path}: cannot read the frame array .*save it again with numpy.save"):
            FramesDataModule(test_npy=str(path), on_bad_sample="skip")


def test_frame_files_with_wrong_channel_count(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((4, 20, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'two.npy'}: frames of shape .* have 2 channels .*expected 1 or 3"):
        FramesDataModule(test_npy=str(tmp_path / "two.npy"))


@pytest.mark.parametrize(("value", "reason"), [(np.nan, "has NaN or infinite values"), (2.0, "ranges over [0.5, 2], not [0, 1]")])
def test_frame_sequences_with_bad_values(tmp_path, value, reason):
    frames = np.full((4, 20, 8, 8), 0.5, np.float32)
    frames[1, 3, 2, 2] = value
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    raises_naming(lambda: FramesDataModule(test_npy=str(path)), f"{path} sequence 1: {reason}", "scale the frames")
    with pytest.warns(UserWarning, match="test sequences: skipped 1 of 4 samples"):
        dm = FramesDataModule(test_npy=str(path), batch_size=8, on_bad_sample="skip")
    batch = next(iter(dm.test_dataloader()))
    assert batch.frames.shape[0] == 3 and np.isfinite(batch.frames.numpy()).all() and batch.frames.max() <= 1
    assert dm.skipped["test"] == [f"{path} sequence 1 ({reason})"]


# --- end to end: the skip report of a real fit -----------------------------------------------------------------
def test_fit_reports_and_logs_skipped_samples(tmp_path):
    """One corrupt training image, batches of one: its batch is left out, the epoch report names the file and
    train/skipped_samples is logged."""
    kwargs, json_path = write_captions(tmp_path, "karpathy", "truncated_image")
    with pytest.warns(UserWarning) as record:
        run_cli("fit", "--config", str(CONFIGS / "captioning.yaml"), *TINY_TRAINER, *TINY_CAPTIONING,
                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.limit_train_batches", "1.0",
                "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "logs"),
                "--data.karpathy_json", json_path, "--data.image_root", kwargs["image_root"], "--data.image_size", "16",
                "--data.batch_size", "1", "--data.on_bad_sample", "skip")
    reports = [str(w.message) for w in record if "bad samples in epoch" in str(w.message)]
    assert len(reports) == 1 and reports[0].startswith("train: skipped 1 bad samples in epoch 0")
    assert "bad.jpg (cannot read image" in reports[0]
    (metrics_file,) = (tmp_path / "logs").rglob("metrics.csv")
    rows = list(csv.DictReader(open(metrics_file)))
    assert [float(r["train/skipped_samples"]) for r in rows if r.get("train/skipped_samples")] == [1.0]
    assert {float(r["val/skipped_samples"]) for r in rows if r.get("val/skipped_samples")} == {0.0}


def test_an_all_bad_batch_skips_the_step_or_joins_ddp_with_a_zero_loss():
    from types import SimpleNamespace

    import torch

    from apps.core import SequenceTask

    task = SequenceTask()
    task.layer = torch.nn.Linear(3, 2)
    batch = SkippedBatch(("a.jpg (image file is truncated)",))
    task._trainer = SimpleNamespace(world_size=1)
    assert task.shared_step(batch, "train") is None  # one process: Lightning skips the step
    task._trainer = SimpleNamespace(world_size=2)
    loss = task.shared_step(batch, "train")  # DDP: every rank must take part in the gradient all-reduce
    loss.backward()
    assert loss.item() == 0.0 and all(torch.equal(p.grad, torch.zeros_like(p)) for p in task.parameters())
    assert task._skipped["train"] == list(batch.skipped) * 2
