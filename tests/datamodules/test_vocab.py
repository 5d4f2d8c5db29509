import pytest

from datamodules.vocab import SPECIALS, Vocabulary


def test_round_trip_and_specials():
    vocab = Vocabulary.build([["a", "red", "circle"], ["a", "blue", "square"]])
    assert vocab.tokens[:4] == list(SPECIALS)
    ids = vocab.encode(["a", "red", "square"])
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == ["a", "red", "square"]
    assert vocab.decode([*ids, vocab.index["red"]]) == ["a", "red", "square"]  # nothing after <eos>
    assert Vocabulary(vocab.tokens).tokens == vocab.tokens  # rebuilt from a checkpoint's token list


def test_min_freq_and_unknown_words():
    vocab = Vocabulary.build([["a", "a", "rare"]], min_freq=2)
    assert "rare" not in vocab.index
    assert vocab.encode(["rare"])[1] == vocab.unk_id


def test_build_is_stable_most_frequent_first():
    vocab = Vocabulary.build([["b", "a", "c", "c"]])
    assert vocab.tokens[4:] == ["c", "a", "b"]


def test_rejects_malformed_token_lists():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([*SPECIALS, "a", "a"])
