"""CIDEr-D and ROUGE-L as computed by the COCO caption evaluation (coco-caption), without Java.

torchmetrics has BLEU but no CIDEr, and its ROUGE-L is an F1 with one reference at a time, while coco-caption's is
an F-measure with beta=1.2 over the best precision and recall across references; both are written here as
torchmetrics `Metric`s so they accumulate over batches and sync across processes like the others.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics import Metric


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """coco-caption ROUGE-L of one candidate against its references."""
    if not candidate or not references:
        return 0.0
    lcs = [_lcs(candidate, ref) for ref in references]
    precision = max(n / len(candidate) for n in lcs)
    recall = max(n / len(ref) for n, ref in zip(lcs, references) if ref)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class CiderDScorer:
    """CIDEr-D per caption (Vedantam et al. 2015, coco-caption's CiderD) with document frequencies fixed once from
    a corpus of reference sets: tf-idf n-gram (n=1..4) cosine similarity with clipped candidate counts and a
    Gaussian length penalty, averaged over references, x10. SCST's reward uses the training references as the
    corpus (computed once); the evaluation metric uses the evaluated set's own references, as coco-caption does."""

    N = 4

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]], sigma: float = 6.0) -> None:
        self.sigma = sigma
        self.doc_freq: Counter = Counter()
        for refs in corpus:
            self.doc_freq.update({g for ref in refs for n in range(1, self.N + 1) for g in _ngrams(ref, n)})
        self.log_num_docs = math.log(float(max(1, len(corpus))))

    def vectorise(self, words: Sequence[str]) -> tuple[list[dict], list[float], int]:
        vecs, norms = [], []
        for n in range(1, self.N + 1):
            vec = {g: tf * (self.log_num_docs - math.log(max(1.0, self.doc_freq[g]))) for g, tf in _ngrams(words, n).items()}
            vecs.append(vec)
            norms.append(math.sqrt(sum(v * v for v in vec.values())))
        # coco-caption measures length in bigrams (its `n == 1` with zero-based n)
        return vecs, norms, max(0, len(words) - 1)

    def scores(self, candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> list[float]:
        """One score per candidate against its references; a reference set repeated for several candidates (SCST's
        samples of one image) is vectorised once, and a repeated (candidate, references) pair scored once."""
        ref_vectors: dict[tuple, list] = {}
        seen: dict[tuple, float] = {}
        out = []
        for cand, refs in zip(candidates, references):
            key = tuple(map(tuple, refs))
            if (tuple(cand), key) in seen:
                out.append(seen[tuple(cand), key])
                continue
            if key not in ref_vectors:
                ref_vectors[key] = [self.vectorise(ref) for ref in refs]
            c_vecs, c_norms, c_len = self.vectorise(cand)
            score = 0.0
            for r_vecs, r_norms, r_len in ref_vectors[key]:
                penalty = math.exp(-((c_len - r_len) ** 2) / (2 * self.sigma**2))
                for n in range(self.N):
                    dot = sum(min(v, r_vecs[n].get(g, 0.0)) * r_vecs[n].get(g, 0.0) for g, v in c_vecs[n].items())
                    if c_norms[n] and r_norms[n]:
                        score += dot / (c_norms[n] * r_norms[n]) * penalty
            out.append(score / self.N / max(1, len(refs)) * 10.0)
            seen[tuple(cand), key] = out[-1]
        return out


def cider_d(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], sigma: float = 6.0) -> float:
    """Corpus CIDEr-D as coco-caption computes it: document frequencies from the references of the evaluated set
    itself, the mean over images of `CiderDScorer.scores`."""
    total = sum(CiderDScorer(references, sigma).scores(candidates, references))
    return total / max(1, len(candidates))


def _encode(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def _decode(data: torch.Tensor) -> str:
    return bytes(data.tolist()).decode("utf-8")


class _CaptionCorpusMetric(Metric):
    """Keeps candidates and references until `compute`, since corpus statistics need all of them. Texts are
    stored as UTF-8 byte tensors so that the states gather across processes (DDP) like any other metric."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("candidates", default=[], dist_reduce_fx="cat")
        self.add_state("references", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:
        # one tensor per caption; the terminating byte 0 keeps captions apart after a cross-process `cat`
        self.candidates.extend(_encode(c + "\0") for c in preds)
        self.references.extend(_encode("\n".join(refs) + "\0") for refs in target)

    def _pairs(self) -> tuple[list[list[str]], list[list[list[str]]]]:
        def texts(state: list[torch.Tensor] | torch.Tensor) -> list[str]:
            joined = state if isinstance(state, torch.Tensor) else torch.cat(state) if state else torch.zeros(0)
            return _decode(joined.to(torch.uint8).cpu())[:-1].split("\0") if len(joined) else []

        cands = [c.split() for c in texts(self.candidates)]
        refs = [[r.split() for r in joined.split("\n")] for joined in texts(self.references)]
        return cands, refs


class CIDErD(_CaptionCorpusMetric):
    """Corpus CIDEr-D; update(preds=[caption], target=[[reference, ...]]) like torchmetrics' BLEUScore."""

    def compute(self) -> torch.Tensor:
        return torch.tensor(cider_d(*self._pairs()))


class ROUGEL(_CaptionCorpusMetric):
    """Mean coco-caption ROUGE-L over images."""

    def compute(self) -> torch.Tensor:
        cands, refs = self._pairs()
        return torch.tensor(sum(rouge_l(c, r) for c, r in zip(cands, refs)) / max(1, len(cands)))
