"""Word vocabulary for token-generating tasks, built from training text and stored in checkpoints."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocabulary:
    """Bidirectional token <-> id map. Ids 0..3 are always <pad> <bos> <eos> <unk>."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {list(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = list(tokens)
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        """Words seen at least `min_freq` times, most frequent first (ties alphabetical, so builds are stable)."""
        counts = Counter(word for sentence in sentences for word in sentence)
        words = sorted((w for w, n in counts.items() if n >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Words -> [<bos>, ids..., <eos>]; unknown words map to <unk>."""
        return [self.bos_id, *(self.index.get(w, self.unk_id) for w in words), self.eos_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <eos> and dropping <bos>/<pad>."""
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.bos_id, self.pad_id):
                words.append(self.tokens[i])
        return words
