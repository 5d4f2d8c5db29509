"""Many-to-one heads: a sequence of encoder steps -> class logits, with or without recurrence."""
from __future__ import annotations

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
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout)
        self.rnn = make_rnn(cell, in_dim, hidden_dim, num_layers, dropout, bidirectional)
        out_dim = hidden_dim * (2 if bidirectional else 1)
        self.pool = SequencePooling(out_dim, pooling, bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(out_dim, num_classes)

    def forward(self, encoded: Encoded) -> Tensor:
        """Encoded((B, T, in_dim), lengths) -> (B, num_classes) logits; padded steps are never read."""
        out, _ = run_rnn(self.rnn, self.input_dropout(encoded.seq), encoded.lengths)  # (B, T, H * directions)
        return self.head(self.dropout(self.pool(Encoded(out, encoded.lengths))))


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
