"""Text encoders: word ids -> a sequence of word vectors."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from encoders.base import Encoded, Encoder, register_encoder


@register_encoder("word_embedding")
class WordEmbeddingEncoder(Encoder):
    """A learned embedding per word, optionally with fixed per-word features appended (e.g. a lexicon's valence).

    Args:
        vocab_size: number of word ids (from the vocabulary).
        word_features: (vocab_size, F) fixed features of each word, appended to its embedding (not trained; stored
            in the state dict); None for none.
        embed_dim: size of the learned embedding.
        dropout: on the word vectors.
        word_dropout: in training, each word is replaced by <unk> with this probability (so the model cannot lean
            on single rare words, and learns what to do with unknown ones).
        pad_id: the id of <pad> (its vector is zero and never trained).
        unk_id: the id of <unk>.
    """

    def __init__(
        self,
        vocab_size: int,
        word_features: Tensor | None = None,
        embed_dim: int = 128,
        dropout: float = 0.0,
        word_dropout: float = 0.0,
        pad_id: int = 0,
        unk_id: int = 3,
    ) -> None:
        super().__init__()
        if word_features is not None and word_features.shape[0] != vocab_size:
            raise ValueError(f"word_features has {word_features.shape[0]} rows for {vocab_size} words")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.register_buffer("word_features", word_features.float() if word_features is not None else None)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout, self.pad_id, self.unk_id = word_dropout, pad_id, unk_id
        self.out_dim = embed_dim + (0 if word_features is None else word_features.shape[1])

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Encoded:
        """(B, T) word ids (<pad> after each length) -> Encoded((B, T, out_dim), lengths)."""
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens != self.pad_id)
            tokens = tokens.masked_fill(drop, self.unk_id)
        x = self.embedding(tokens)  # (B, T, embed_dim)
        if self.word_features is not None:
            x = torch.cat([x, self.word_features[tokens]], dim=-1)  # (B, T, embed_dim + F)
        return Encoded(self.dropout(x), lengths)
