"""Audio encoder: waveform -> log-mel frames -> per-utterance normalisation -> SpecAugment (training only)
-> a convolutional front end that subsamples time.

Padding never leaks into valid steps: frames are taken without centring (a frame only reads its own samples),
normalisation statistics use valid frames only, and padded frames are zeroed before every convolution, so a
padded utterance encodes exactly like the same utterance alone.
"""
from __future__ import annotations

import math

import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

from encoders.base import Encoded, Encoder, lengths_to_mask, register_encoder


def conv_out_length(lengths: Tensor, stride: int) -> Tensor:
    """Steps after a kernel-3, padding-1 convolution with this stride."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


@register_encoder("log_mel")
class LogMelEncoder(Encoder):
    """(B, S) waveforms + (B,) lengths in samples -> Encoded((B, T', out_dim), (B,) lengths in output steps).

    Args:
        sample_rate: rate of the incoming waveforms (Hz).
        n_mels: mel bands.
        win_ms: analysis window (ms); also the FFT size.
        hop_ms: frame shift (ms); one output step spans hop_ms * prod(time_strides).
        channels: width of each 3x3 convolution of the front end (each halves the mel axis).
        time_strides: time stride of each convolution (same length as `channels`).
        out_dim: feature size of each output step.
        freq_masks: SpecAugment frequency masks per utterance (training only).
        freq_mask_width: widest frequency mask, in mel bands.
        time_masks: SpecAugment time masks per utterance (training only).
        time_mask_width: widest time mask, in frames.
        dropout: dropout on the output features.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        channels: list[int] = [32, 32],  # noqa: B006 - jsonargparse needs a literal default
        time_strides: list[int] = [2, 2],  # noqa: B006
        out_dim: int = 256,
        freq_masks: int = 2,
        freq_mask_width: int = 15,
        time_masks: int = 2,
        time_mask_width: int = 20,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(channels) != len(time_strides) or not channels:
            raise ValueError(f"channels {channels} and time_strides {time_strides} need the same, non-zero length")
        self.sample_rate = sample_rate
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.time_strides = list(time_strides)
        # center=False: frame i reads samples [i*hop, i*hop + win) only, never the padding after a short utterance
        self.mel = AT.MelSpectrogram(
            sample_rate, n_fft=self.win_length, win_length=self.win_length, hop_length=self.hop_length,
            n_mels=n_mels, center=False,
        )
        self.freq_masking = AT.FrequencyMasking(freq_mask_width, iid_masks=True)
        self.time_masking = AT.TimeMasking(time_mask_width, iid_masks=True)
        self.freq_masks, self.time_masks = freq_masks, time_masks
        convs, prev, freq = [], 1, n_mels
        for width, stride in zip(channels, time_strides):
            convs.append(nn.Conv2d(prev, width, 3, stride=(stride, 2), padding=1))
            prev, freq = width, (freq - 1) // 2 + 1
        self.convs = nn.ModuleList(convs)
        self.proj = nn.Sequential(nn.Linear(prev * freq, out_dim), nn.Dropout(dropout))
        self.out_dim = out_dim
        #: seconds of audio per output step (for time stamps from CTC alignments)
        self.seconds_per_step = self.hop_length * math.prod(time_strides) / sample_rate

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) log-mel frames."""
        return torch.div(lengths.clamp(min=self.win_length) - self.win_length, self.hop_length, rounding_mode="floor") + 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) output steps."""
        steps = self.frame_lengths(lengths)
        for stride in self.time_strides:
            steps = conv_out_length(steps, stride)
        return steps

    def features(self, audio: Tensor, lengths: Tensor) -> Tensor:
        """(B, S) -> (B, T, n_mels) normalised log-mel, zero on padded frames."""
        if audio.shape[1] < self.win_length:  # too short for one frame: pad (the padding is read as silence)
            audio = nn.functional.pad(audio, (0, self.win_length - audio.shape[1]))
        with torch.autocast(audio.device.type, enabled=False):
            mel = self.mel(audio.float())  # (B, n_mels, T)
        feats = torch.log(mel + 1e-6).transpose(1, 2)  # (B, T, n_mels)
        frames = self.frame_lengths(lengths)
        mask = lengths_to_mask(frames, feats.shape[1])[..., None].float()  # (B, T, 1)
        count = frames.clamp(min=1)[:, None, None].float()
        mean = (feats * mask).sum(1, keepdim=True) / count
        var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / count
        return (feats - mean) / (var + 1e-5).sqrt() * mask

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        B, S = x.shape
        if lengths is None:
            lengths = torch.full((B,), S, dtype=torch.long, device=x.device)
        feats = self.features(x, lengths)  # (B, T, F)
        if self.training:
            spec = feats.transpose(1, 2)[:, None]  # (B, 1, F, T), the layout torchaudio's maskers expect
            for _ in range(self.freq_masks):
                spec = self.freq_masking(spec)
            for _ in range(self.time_masks):
                spec = self.time_masking(spec)
            feats = spec[:, 0].transpose(1, 2)
        steps = self.frame_lengths(lengths)
        h = feats[:, None]  # (B, 1, T, F)
        for conv, stride in zip(self.convs, self.time_strides):
            h = torch.relu(conv(h))  # (B, C, T', F')
            steps = conv_out_length(steps, stride)
            h = h * lengths_to_mask(steps, h.shape[2])[:, None, :, None]  # zero padded steps before the next conv
        h = h.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        return Encoded(self.proj(h), steps)

