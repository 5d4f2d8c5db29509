"""Many-to-one heads: a sequence of encoder steps -> class logits, with or without recurrence."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from decoders.rnn import CellType, PoolingType, SequencePooling, make_rnn, run_rnn
from encoders.base import Encoded


class RNNClassifier(nn.Module):
    """LSTM/GRU/RNN over the valid steps, pooled to one vector, then a linear classifier (LRCN's head).

    Args:
        in_dim: feature size of each step (from the encoder).
        num_classes: number of classes (from the datamodule).
        hidden_dim: RNN state size per direction.
        cell: lstm, gru or rnn.
        num_layers: stacked RNN layers.
        dropout: between stacked layers and before the classifier.
        bidirectional: also read the clip backwards.
        pooling: last (state at the last valid step), mean (over valid steps) or attention (learned weights).
        input_dropout: dropout on the encoder's features before the RNN (training only): against a small set's
            memorisation of wide frozen features (LRCN drops CNN features the same way).
        clip_features: the first `clip_features` features of every step skip the RNN: their average over the
            valid steps joins the RNN's summary before the classifier (the averaged appearance stream of TSN's
            two streams). With FrameEncoder(motion=correlation) these are the pooled appearance features
            (the image encoder's `out_dim`, e.g. 1280) and the RNN reads the motion alone: what is in the frames
            is a property of the clip, how it moves a property of the sequence, and an RNN given a small set's
            per-frame appearance memorises its videos (two camera-motion check sets, offline probes: 0.878 -> 0.885 and 0.986 -> 0.993 top-1). 0 = all
            features go through the RNN.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 128,
        cell: CellType = "lstm",
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        pooling: PoolingType = "last",
        input_dropout: float = 0.0,
        clip_features: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= clip_features < in_dim:
            raise ValueError(f"clip_features={clip_features} must leave the RNN some of the {in_dim} features per step")
        self.clip_features = clip_features
        self.input_dropout = nn.Dropout(input_dropout)
        self.rnn = make_rnn(cell, in_dim - clip_features, hidden_dim, num_layers, dropout, bidirectional)
        out_dim = hidden_dim * (2 if bidirectional else 1)
        self.pool = SequencePooling(out_dim, pooling, bidirectional)
        self.clip_mean = SequencePooling(clip_features, "mean")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(out_dim + clip_features, num_classes)

    def forward(self, encoded: Encoded) -> Tensor:
        """Encoded((B, T, in_dim), lengths) -> (B, num_classes) logits; padded steps are never read."""
        seq = self.input_dropout(encoded.seq)
        k = self.clip_features
        out, _ = run_rnn(self.rnn, seq[..., k:], encoded.lengths)  # (B, T, H * directions)
        summary = self.dropout(self.pool(Encoded(out, encoded.lengths)))
        if k:
            summary = torch.cat([summary, self.clip_mean(Encoded(seq[..., :k], encoded.lengths))], dim=-1)
        return self.head(summary)


class PooledClassifier(nn.Module):
    """No recurrence: pool the steps (order-blind), then an MLP classifier. With FrameEncoder(frames=one)
    there is a single step, so this is the single-frame baseline that shows what the time axis adds.

    Args:
        in_dim: feature size of each step (from the encoder).
        num_classes: number of classes (from the datamodule).
        hidden_dim: width of the hidden layer; 0 = a linear classifier.
        dropout: before the classifier.
        pooling: mean, last or attention over valid steps.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 0,
        dropout: float = 0.0,
        pooling: PoolingType = "mean",
    ) -> None:
        super().__init__()
        self.pool = SequencePooling(in_dim, pooling)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim:
            layers += [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_dim or in_dim, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, encoded: Encoded) -> Tensor:
        """Encoded((B, T, in_dim), lengths) -> (B, num_classes) logits."""
        return self.head(self.pool(encoded))
