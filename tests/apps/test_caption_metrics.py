import math

import pytest

from apps.caption_metrics import CIDErD, ROUGEL, cider_d, rouge_l


def test_rouge_l_by_hand():
    # candidate "a b c d", references "a c d" (LCS 3) and "b x" (LCS 1)
    # P = max(3/4, 1/4) = 0.75, R = max(3/3, 1/2) = 1, F(beta=1.2) = (1 + 1.44) * 0.75 * 1 / (1 + 1.44 * 0.75)
    expected = 2.44 * 0.75 / (1 + 1.08)
    assert rouge_l("a b c d".split(), ["a c d".split(), "b x".split()]) == pytest.approx(expected)
    assert rouge_l("z".split(), ["a b".split()]) == 0.0


def test_cider_d_by_hand():
    # Two images, one reference each. Image 1: candidate equals its reference "a b"; image 2: candidate "c" vs "d".
    # Document frequencies over the 2 reference sets: "a", "b", "a b", "d" each occur in 1 of 2 -> idf = log 2.
    # Image 1: every n-gram vector of the candidate equals the reference's: cosine 1 for n = 1, 2; n = 3, 4 empty
    # (norm 0, contributes 0). Lengths equal -> no penalty. Score = (1 + 1 + 0 + 0) / 4 * 10 = 5.
    # Image 2: no shared n-gram -> 0. Corpus CIDEr-D = (5 + 0) / 2 = 2.5.
    assert cider_d([["a", "b"], ["c"]], [[["a", "b"]], [["d"]]]) == pytest.approx(2.5)


def test_cider_d_length_penalty_and_clipping_by_hand():
    # One candidate "a a" vs reference "a b c"; second image only provides document frequencies ("x").
    # idf: log(2) - log(1) = log 2 for every n-gram of image 1. Unigrams: cand {a: 2 log2}, ref {a, b, c: log2}.
    # Clipped dot = min(2 log2, log2) * log2 = log2^2; norms: 2 log2 and sqrt(3) log2 -> cosine 1 / (2 sqrt 3).
    # Bigrams: cand {a a}, ref {a b, b c}: 0. Length (in bigrams) 1 vs 2 -> penalty exp(-1 / 72).
    expected = (1 / (2 * math.sqrt(3))) * math.exp(-1 / 72) / 4 * 10 / 2  # / 2: mean over the two images
    assert cider_d([["a", "a"], ["y"]], [[["a", "b", "c"]], [["x"]]]) == pytest.approx(expected)


def test_metrics_accumulate_over_batches_like_one_batch():
    preds, refs = ["a b", "c"], [["a b", "a c"], ["d"]]
    whole, split = CIDErD(), CIDErD()
    whole.update(preds, refs)
    split.update(preds[:1], refs[:1])
    split.update(preds[1:], refs[1:])
    assert whole.compute().item() == pytest.approx(split.compute().item())
    rouge = ROUGEL()
    rouge.update(preds, refs)
    assert rouge.compute().item() == pytest.approx((1.0 + 0.0) / 2)
