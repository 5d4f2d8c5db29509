import json
from collections import Counter

import pytest

from datamodules.bad_samples import BadSampleError
from datamodules.sentiment import (
    POLARITY, SentimentDataModule, read_movie_reviews, read_text_lines, split_of, tokenize, vader_word_features,
)
from datamodules.vocab import UNK, Vocabulary


@pytest.fixture(scope="module")
def movie_reviews():
    return read_movie_reviews()


def test_reader_parses_the_packaged_archive(movie_reviews):
    sentences, neutral = movie_reviews
    assert len(sentences) + neutral == 10605 and neutral == 37  # the file's lines; a mean rating of exactly 0 is dropped
    counts = Counter(s.label for s in sentences)
    assert set(counts) == set(POLARITY) and 0.45 < counts["positive"] / len(sentences) < 0.55
    first = sentences[0]
    assert first.text.startswith("The Rock is destined") and first.label == "positive" and first.id.endswith(":1 (id 1)")
    assert any("Jirí Hubac" in s.text for s in sentences)  # UTF-8, not mojibake
    assert not any(s.text.endswith("\r") for s in sentences)  # CRLF line ends


def test_split_is_fixed_disjoint_and_80_10_10(movie_reviews):
    sentences, _ = movie_reviews
    dm = SentimentDataModule()
    parts = {split: {s.text for s in dm.sentences[split]} for split in ("train", "val", "test")}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    sizes = {split: len(dm.sentences[split]) for split in parts}
    assert sizes == {"train": 8463, "val": 1079, "test": 1026}  # a hash of the text: the same on every machine
    assert sum(sizes.values()) == len(sentences)
    assert dm.sentences["test"][0].id == SentimentDataModule().sentences["test"][0].id
    other = SentimentDataModule(split_seed=1)
    assert {s.text for s in other.sentences["test"]} != parts["test"]
    assert split_of("a sentence", 0) == split_of("a sentence", 0)


def test_size_limits_take_a_fixed_subset_of_both_classes():
    dm = SentimentDataModule(num_train_sentences=64, num_test_sentences=40)
    assert len(dm.sentences["train"]) == 64 and len(dm.sentences["test"]) == 40
    for split in ("train", "test"):  # the file is sorted by label: a prefix would be all positive
        assert 0.25 < Counter(s.label for s in dm.sentences[split])["positive"] / len(dm.sentences[split]) < 0.75
    full = {s.text for s in SentimentDataModule().sentences["test"]}
    again = SentimentDataModule(num_test_sentences=40).sentences["test"]
    assert [s.id for s in again] == [s.id for s in dm.sentences["test"]] and {s.text for s in again} <= full


def test_tokenizer_lowercases_and_splits_words_clitics_and_punctuation():
    assert tokenize("The Rock isn't BAD!") == ["the", "rock", "is", "n't", "bad", "!"]
    assert tokenize("''Conan'' -- film's end, :)") == ["'", "'", "conan", "'", "'", "-", "-", "film", "'s", "end", ",", ":", ")"]
    assert tokenize("Jirí Hubac") == ["jirí", "hubac"]


def test_vocabulary_keeps_frequent_training_words_and_maps_the_rest_to_unk(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("pos\tgood good film\nneg\tbad film\npos\tgood\n")
    dm = SentimentDataModule(train_file=str(train), val_file=str(train), min_word_freq=2)
    assert dm.vocabulary.tokens == ["<pad>", "<bos>", "<eos>", UNK, "good", "film"]  # 'bad' seen once
    assert dm.vocab == "\n".join(dm.vocabulary.tokens)  # what checkpoints store
    ids, label, _ = dm.val_dataloader().dataset[1]
    assert ids == [dm.vocabulary.unk_id, dm.vocabulary.index["film"]] and label == dm.class_names.index("neg")


def test_jsonl_and_tsv_own_data(tmp_path):
    rows = [("I loved it", "joy"), ("so dull", "boredom"), ("what a thrill", "joy"), ("meh", "boredom"), ("argh", "anger")]
    jsonl, tsv = tmp_path / "train.jsonl", tmp_path / "val.tsv"
    jsonl.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    tsv.write_text("joy\tloved every minute\nanger\tawful\n")
    dm = SentimentDataModule(train_file=str(jsonl), val_file=str(tsv), test_file=str(tsv), batch_size=4)
    assert dm.class_names == ["anger", "boredom", "joy"]  # from the training file, sorted
    assert dm.data_source == f"sentences of {jsonl}"
    batch = next(iter(dm.val_dataloader()))
    assert batch.labels.tolist() == [2, 0] and batch.ids == [f"{tsv}:1", f"{tsv}:2"]
    assert batch.tokens.shape == (2, 3) and batch.lengths.tolist() == [3, 1] and batch.tokens[1, 1:].eq(0).all()
    # evaluating a checkpoint: vocabulary and labels come from it, the training file is not read
    again = SentimentDataModule(train_file=str(tmp_path / "gone.jsonl"), test_file=str(tsv), vocab=dm.vocab,
                                class_names=dm.class_names)
    assert next(iter(again.test_dataloader())).tokens.tolist() == next(iter(dm.test_dataloader())).tokens.tolist()


BAD_LINES = {
    "empty line": (b"pos\tfine\n\nneg\tbad\n", 2, "empty line"),
    "non-UTF-8": (b"pos\tfine\nneg\tcaf\xe9 awful\n", 2, "not UTF-8"),
    "no tab": (b"pos\tfine\nneg bad\n", 2, "no tab"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_training_line_names_file_and_line_or_is_skipped(case, tmp_path):
    content, line, message = BAD_LINES[case]
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(BadSampleError, match=f"^{path}:{line}: {message}.*--data.on_bad_sample skip"):
        SentimentDataModule(train_file=str(path), val_file=str(path))
    with pytest.warns(UserWarning, match="skipped 1"):
        dm = SentimentDataModule(train_file=str(path), val_file=str(path), on_bad_sample="skip")
    assert len(dm.sentences["train"]) == content.count(b"\n") - 1 and len(dm.skipped["train"]) == 1
    assert dm.skipped["train"][0].startswith(f"{path}:{line} ({message}")


def test_unknown_validation_label_and_malformed_json(tmp_path):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text('{"text": "nice", "label": "pos"}\n{"text": "awful", "label": "neg"}\n')
    val.write_text('{"text": "nice", "label": "pos"}\n{"text": "hmm", "label": "neutral"}\n{"text": oops}\n')
    with pytest.raises(BadSampleError, match=f"^{val}:2: label 'neutral' is not one of the training labels"):
        SentimentDataModule(train_file=str(train), val_file=str(val))
    with pytest.warns(UserWarning, match="val sentences: skipped 2"):
        dm = SentimentDataModule(train_file=str(train), val_file=str(val), on_bad_sample="skip")
    assert [s.text for s in dm.sentences["val"]] == ["nice"]
    assert dm.skipped["val"][1].startswith(f"{val}:3 (not valid JSON")


def test_empty_file_is_an_error_even_when_skipping(tmp_path):
    empty = tmp_path / "train.tsv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        SentimentDataModule(train_file=str(empty), val_file=str(empty), on_bad_sample="skip")


def test_predict_file_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("Great fun.\nA bore\n")
    assert [(s.text, s.id) for s in read_text_lines(str(path))] == [("Great fun.", f"{path}:1"), ("A bore", f"{path}:2")]
    path.write_bytes(b"Great fun.\n\xff\xfe\n")
    with pytest.raises(ValueError, match=f"{path}:2: not UTF-8"):
        read_text_lines(str(path))
    path.write_text("Great fun.\n\nA bore\n")
    with pytest.raises(ValueError, match=f"{path}:2: empty line"):
        read_text_lines(str(path))


def test_missing_archive_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNSUITE_PACKAGES", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make install.*vaderSentiment==3.3.2"):
        read_movie_reviews()


def test_vader_word_features():
    features = vader_word_features(Vocabulary.build([["good", "not", "n't", "table", "horrible"]]).tokens)
    vocab = Vocabulary.build([["good", "not", "n't", "table", "horrible"]])
    rows = {w: features[vocab.index[w]].tolist() for w in ("good", "not", "n't", "table", "horrible")}
    assert rows["good"][0] > 0 > rows["horrible"][0] and rows["table"] == [0.0, 0.0]
    assert rows["not"][1] == rows["n't"][1] == 1.0 and rows["good"][1] == 0.0
    assert features.abs().max() <= 1.0
