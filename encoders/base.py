"""The one interface that joins every encoder to every decoder."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn


class Encoded(NamedTuple):
    """What every encoder returns.

    seq:     (B, T, D) features over time; T=1 for a pooled image, T=H*W for a spatial grid.
    lengths: (B,) number of valid steps per sample, or None when every step is valid.
    """

    seq: Tensor
    lengths: Tensor | None


class Encoder(nn.Module):
    """Base class: subclasses set `out_dim` (the D of `Encoded.seq`) in `__init__`."""

    out_dim: int

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:  # pragma: no cover - interface
        raise NotImplementedError


_ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: makes an encoder listable by name (tests run over every registered one)."""

    def wrap(cls: type[Encoder]) -> type[Encoder]:
        if name in _ENCODERS:
            raise ValueError(f"encoder name {name!r} is already registered by {_ENCODERS[name].__name__}")
        _ENCODERS[name] = cls
        return cls

    return wrap


def get_encoder_class(name: str) -> type[Encoder]:
    if name not in _ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; registered encoders: {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[name]


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def lengths_to_mask(lengths: Tensor | None, max_len: int) -> Tensor | None:
    """(B,) lengths -> (B, max_len) bool mask, True on valid steps; None stays None."""
    if lengths is None:
        return None
    steps = torch.arange(max_len, device=lengths.device)
    return steps[None, :] < lengths[:, None]
