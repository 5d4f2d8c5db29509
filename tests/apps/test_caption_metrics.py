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


# Several references per image, as in COCO; candidates with partial matches, different lengths.
PARITY_REFS = {
    "1": ["a man riding a horse on a beach", "a person rides a brown horse near the ocean", "a man on a horse by the sea"],
    "2": ["two dogs playing in the snow", "a pair of dogs run through snow", "dogs are playing together in the snow",
          "two puppies in the snow"],
    "3": ["a red bus parked on the street", "a double decker bus on a city street", "a bus stopped at the side of a road"],
    "4": ["a plate of food with broccoli and rice", "a meal of rice and vegetables on a plate",
          "broccoli rice and chicken on a white plate"],
    "5": ["a cat sleeping on a laptop keyboard", "a cat lying on top of a laptop", "a grey cat naps on a computer"],
}
PARITY_CANDIDATES = {"1": "a man riding a horse on the beach", "2": "two dogs play in the snow",
                     "3": "a red bus on a street", "4": "a plate with rice and broccoli", "5": "a cat on a laptop"}


def test_bleu_and_cider_d_match_the_coco_caption_scorers():
    """The reference Python scorers of coco-caption (PyPI pycocoevalcap: Bleu, Cider, which is CIDEr-D). Both sides
    get the same lower-case, space-tokenised text (coco-caption's PTBTokenizer, which needs Java, is not used)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from torchmetrics.text import BLEUScore

    ids = sorted(PARITY_REFS)
    coco_bleu, _ = Bleu(4).compute_score(PARITY_REFS, {i: [PARITY_CANDIDATES[i]] for i in ids}, verbose=0)
    coco_cider, _ = Cider().compute_score(PARITY_REFS, {i: [PARITY_CANDIDATES[i]] for i in ids})
    preds, target = [PARITY_CANDIDATES[i] for i in ids], [PARITY_REFS[i] for i in ids]
    for n in range(1, 5):
        assert BLEUScore(n_gram=n)(preds, target).item() == pytest.approx(coco_bleu[n - 1], rel=1e-6)
    metric = CIDErD()
    metric.update(preds, target)
    assert metric.compute().item() == pytest.approx(coco_cider, rel=1e-6)  # our state is float32 at the end
