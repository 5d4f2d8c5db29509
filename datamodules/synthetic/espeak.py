"""A ctypes binding to the espeak-ng library bundled in PyPI `espeakng-loader`: speech plus time-stamped phonemes.

espeak-ng is a formant synthesiser: ~10 ms of CPU per sentence, deterministic, and its phoneme events say which
phoneme starts at which sample, so the labels are the synthesiser's own (no dictionary lookup, no aligner).
The library keeps global state, so the binding is one process-wide object (`Synthesizer.get()`).
"""
from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

import numpy as np
import torch
import torchaudio.transforms as AT
from torch import Tensor

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA instead of espeak's ASCII mnemonics

STRESS_MARKS = "',%=!"  # primary/secondary/unstressed/... marks espeak writes before a vowel
VARIANTS_MALE = [f"m{i}" for i in range(1, 8)]
VARIANTS_FEMALE = [f"f{i}" for i in range(1, 6)]


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),          # sample index at the synthesiser's rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class Utterance(NamedTuple):
    audio: Tensor          # (S,) float32 in [-1, 1] at `sample_rate`
    phonemes: list[str]    # stress marks stripped, pauses dropped
    starts: list[float]    # each phoneme's start time in seconds
    sample_rate: int


def clean_phoneme(name: str) -> str | None:
    """espeak mnemonic -> label: stress marks stripped; pauses ('_', '_:', ...) -> None."""
    name = name.strip().strip(STRESS_MARKS)
    # '_' pauses and ';' (a linking mark, not a sound) carry no phoneme
    return None if not name or name.startswith("_") or not any(ch.isalnum() or ch == "@" for ch in name) else name


class Synthesizer:
    """Process-wide espeak-ng handle. `speak(text, voice, rate, pitch)` -> `Utterance` at `sample_rate`."""

    _instance: Synthesizer | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise ImportError("the generated phoneme corpus needs PyPI espeakng-loader: pip install espeakng-loader") from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.native_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if self.native_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.native_rate}); is {espeakng_loader.get_data_path()} intact?")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._resamplers: dict[int, AT.Resample] = {}
        self._callback = _Callback(self._on_audio)  # kept referenced: the C side calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Synthesizer:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._events.append((events[i].id.string.decode("ascii", "replace"), events[i].sample))
            i += 1
        return 0

    def transcribe(self, text: str, voice: str = "en-us") -> list[tuple[str, str, str]]:
        """`text` -> [(word as written in espeak's mnemonics, phoneme label, its IPA symbol)] for every phoneme,
        from espeak-ng's own transcriber run twice (mnemonics, then IPA) with a separator between phonemes, so the
        two transcriptions align phoneme by phoneme. Afterwards the library drops words from the next synthesis
        (a state espeak-ng's transcriber leaves behind): call it only in a process that does not speak
        (`phoneme_legend` runs it in a child process)."""
        lib = self.lib
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]

        def run(mode: int) -> list[str]:
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            pointer, words = ctypes.c_void_p(ctypes.addressof(buffer)), []
            while pointer.value:  # one clause per call
                words += lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode).decode("utf-8", "replace").split()
            return words

        with self._lock:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            separated = ord("|") << 8
            mnemonic, ipa = run(separated), run(separated | _PHONEMES_IPA)
        triples = []
        for word, word_ipa in zip(mnemonic, ipa):
            names, symbols = word.split("|"), word_ipa.split("|")
            if len(names) != len(symbols):
                continue  # the two transcriptions disagree on this word: leave it out
            for name, symbol in zip(names, symbols):
                label = clean_phoneme(name)
                if label is not None:
                    triples.append((word.replace("|", ""), label, symbol.strip("ˈˌ")))
        return triples

    def speak(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, sample_rate: int = 16000) -> Utterance:
        """Synthesise `text` with `voice` (e.g. "en-us", "en-us-nyc+f2"), `rate` in words/minute, `pitch` 0..100."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}; use a language like en-us, en-us-nyc or en, "
                                 "optionally with a variant like +m3 or +f2")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if err != 0 or not self._chunks:
                raise RuntimeError(f"espeak-ng could not synthesise {text!r} with voice {voice!r} (error {err})")
            wav, events = np.concatenate(self._chunks), self._events
        audio = torch.from_numpy(wav.astype(np.float32) / 32768.0)
        if sample_rate != self.native_rate:
            if sample_rate not in self._resamplers:  # the transform precomputes its filter bank: build it once
                self._resamplers[sample_rate] = AT.Resample(self.native_rate, sample_rate)
            audio = self._resamplers[sample_rate](audio)
        phonemes, starts = [], []
        for name, sample in events:
            label = clean_phoneme(name)
            if label is not None:
                phonemes.append(label)
                starts.append(sample / self.native_rate)
        return Utterance(audio, phonemes, starts, sample_rate)
