"""What every reader does with a bad sample (a missing, corrupt, empty or mislabelled item): stop with an error
that names the file (and line) and what to do, or, with `--data.on_bad_sample skip`, leave it out and count it.

Problems seen while indexing (a listed file missing, a malformed line, an unknown class) are handled at set-up
with `handle`, and the datamodule keeps their descriptions per split. Problems seen only when a sample is
loaded (a truncated image, undecodable audio) happen in `__getitem__`, maybe in a DataLoader worker process,
so a counter there never reaches the main process: in skip mode the dataset returns a `SkippedSample`, the
collate function drops it and carries its description in the batch (`skipped`), and `SequenceTask` adds both
kinds up and reports them at the end of every epoch (and logs `<stage>/skipped_samples`).

Errors raised on purpose for bad input (a bad sample, a wrong or missing file or folder) are `InputError`s:
`rnnsuite` prints their message alone, without a traceback, and lets every other exception (a bug) through whole.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, TypeVar

BadSamplePolicy = Literal["error", "skip"]
POLICIES = ("error", "skip")
T = TypeVar("T")


class InputError(Exception):
    """What the user gave is wrong (a path, a file, its contents): the message says what, where and what to do,
    and the CLI prints it alone (apps/cli.py `main`)."""


class BadInputError(InputError, ValueError):
    """A file or option with the wrong contents: shape, dtype, too few frames, unreadable."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that does not exist, or a folder without the files it should hold."""


class BadSampleError(InputError, ValueError):
    """One bad sample: `path` (and `line`: a line number, or a label such as "images[3]"), what is wrong, what to do."""

    def __init__(self, path: str, reason: str, fix: str, line: int | str | None = None, skippable: bool = True) -> None:
        self.path, self.reason, self.fix, self.line, self.skippable = path, reason, fix, line, skippable
        hint = ", or pass --data.on_bad_sample skip to leave such samples out" if skippable else ""
        super().__init__(f"{self.where}: {reason}; {fix}{hint}")

    @property
    def where(self) -> str:
        if self.line is None:
            return self.path
        return f"{self.path}:{self.line}" if isinstance(self.line, int) else f"{self.path} {self.line}"

    def describe(self) -> str:
        """Short form for the skip report, e.g. 'a.jpg (image file is truncated)'."""
        return f"{self.where} ({self.reason})"

    def __reduce__(self):  # picklable across worker processes despite the keyword-rich __init__
        return type(self), (self.path, self.reason, self.fix, self.line, self.skippable)


class SkippedSample(NamedTuple):
    """What a dataset returns in skip mode instead of a sample it could not load."""

    description: str


class SkippedBatch(NamedTuple):
    """A batch whose every sample was skipped: the step is left out, the skips are still counted."""

    skipped: tuple[str, ...]


def check_policy(policy: str) -> BadSamplePolicy:
    if policy not in POLICIES:
        raise ValueError(f"on_bad_sample must be one of {POLICIES}, got {policy!r}")
    return policy  # type: ignore[return-value]


def handle(policy: BadSamplePolicy, error: BadSampleError, skipped: list[str]) -> None:
    """At index time: raise `error`, or record it in `skipped` and go on."""
    if policy == "error":
        raise error
    skipped.append(error.describe())


def load_or_skip(policy: BadSamplePolicy, load: Callable[[], T]) -> T | SkippedSample:
    """At load time (`__getitem__`): the loaded sample, or in skip mode a `SkippedSample` for a bad one."""
    try:
        return load()
    except BadSampleError as err:
        if policy == "error":
            raise
        return SkippedSample(err.describe())


def drop_skipped(samples: Sequence[T | SkippedSample]) -> tuple[list[T], tuple[str, ...]]:
    """For a collate function: (the good samples, descriptions of the skipped ones)."""
    kept = [s for s in samples if not isinstance(s, SkippedSample)]
    return kept, tuple(s.description for s in samples if isinstance(s, SkippedSample))


def warn_skipped(what: str, skipped: Sequence[str], total: int | None = None) -> None:
    """One warning at set-up for the samples skipped while indexing (they are reported every epoch too)."""
    if skipped:
        shown = "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        of = f" of {total}" if total is not None else ""
        warnings.warn(f"{what}: skipped {len(skipped)}{of} samples: {shown}", stacklevel=3)
