"""Sentence sentiment data: movie-review snippets rated by people (Hutto & Gilbert, ICWSM 2014) by default, or your
own labelled sentences (JSONL or TSV); a word tokenizer and the training vocabulary; the VADER lexicon and analyser.

The default data ship in the PyPI source archive of vaderSentiment 3.3.2 (`make install` downloads it):
`additional_resources/hutto_ICWSM_2014.tar.gz` -> `movieReviewSnippets_GroundTruth.txt`, UTF-8 with CRLF line ends,
one `id<TAB>mean rating<TAB>sentence` per line: 10,605 sentences of Pang & Lee's movie reviews, each the mean of
about 20 people's ratings on -4..+4. Positive if the mean is > 0, negative if < 0; the 37 rated exactly 0 are dropped.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import tarfile
from functools import lru_cache
from typing import Callable, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, MissingInputError, handle, warn_skipped
from datamodules.base import SplitDataModule, packaged_archive
from datamodules.vocab import Vocabulary

VADER_ARCHIVE, VADER_REQUIREMENT = "vaderSentiment-3.3.2.tar.gz", "vaderSentiment==3.3.2"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MOVIE_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
POLARITY = ["negative", "positive"]  # the default data's classes (what VADER's compound score can be compared to)
FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test share of the default data

# Lower-cased words (letters, digits), English clitics split off the way the Penn Treebank does ("don't" -> do n't,
# "film's" -> film 's), and every other non-space character as a token of its own (punctuation, emoji).
TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|(?<=\w)'(?:s|re|ve|d|ll|m)\b|\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """'The Rock isn't bad!' -> ['the', 'rock', 'is', "n't", 'bad', '!']"""
    return TOKEN.findall(text.lower())


class Sentence(NamedTuple):
    text: str
    label: str
    id: str  # file:line, where it came from


def read_movie_reviews() -> tuple[list[Sentence], int]:
    """The rated movie-review sentences of the packaged archive (read in memory, nothing is extracted or run);
    returns (sentences with a polarity, how many were rated exactly 0 and dropped)."""
    path = packaged_archive(VADER_ARCHIVE, VADER_REQUIREMENT)
    with tarfile.open(path) as outer, tarfile.open(fileobj=io.BytesIO(outer.extractfile(INNER_ARCHIVE).read())) as inner:
        lines = inner.extractfile(MOVIE_MEMBER).read().decode("utf-8").splitlines()
    sentences, neutral = [], 0
    for lineno, line in enumerate(lines, 1):
        sid, rating, text = line.split("\t", 2)
        if float(rating) == 0:
            neutral += 1
            continue
        sentences.append(Sentence(text.strip(), POLARITY[float(rating) > 0], f"{MOVIE_MEMBER}:{lineno} (id {sid})"))
    return sentences, neutral


def split_of(text: str, seed: int) -> str:
    """train / val / test by a hash of the sentence itself: the same on every machine, independent of line order,
    and a sentence that occurs twice lands in one split."""
    fraction = int.from_bytes(hashlib.blake2b(f"{seed}|{text}".encode(), digest_size=8).digest(), "little") / 2**64
    return "train" if fraction < FRACTIONS[0] else "val" if fraction < FRACTIONS[0] + FRACTIONS[1] else "test"


def read_labelled_file(path: str, policy: BadSamplePolicy, skipped: list[str], labels: list[str] | None = None) -> list[Sentence]:
    """JSONL (`.jsonl`, `.json`, `.ndjson`: one {"text": ..., "label": ...} a line) or TSV (`label<TAB>text`).
    Empty lines, bytes that are not UTF-8, missing fields and labels not in `labels` are bad samples."""
    if not os.path.isfile(path):
        raise MissingInputError(f"{path} does not exist")
    jsonl = path.lower().endswith((".jsonl", ".json", ".ndjson"))
    sentences = []
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    if not raw_lines:
        raise BadInputError(f"{path} is empty: it needs one labelled sentence a line")
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            sentences.append(_parse_line(raw, jsonl, path, lineno, labels))
        except BadSampleError as err:
            handle(policy, err, skipped)
    if not sentences:
        raise BadInputError(f"{path}: every line was bad ({len(skipped)} skipped); nothing to read")
    return sentences


def _parse_line(raw: bytes, jsonl: bool, path: str, lineno: int, labels: list[str] | None) -> Sentence:
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise BadSampleError(path, f"not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})",
                             "save the file as UTF-8", lineno) from None
    if not line:
        raise BadSampleError(path, "empty line", "remove it", lineno)
    if jsonl:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadSampleError(path, f"not valid JSON ({err})", "fix or remove the line", lineno) from None
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise BadSampleError(path, 'expected an object with "text" and "label"', "fix the line", lineno)
        text, label = str(record["text"]).strip(), str(record["label"]).strip()
    else:
        label, tab, text = line.partition("\t")
        if not tab:
            raise BadSampleError(path, "no tab: expected label<TAB>text", "fix the line", lineno)
        label, text = label.strip(), text.strip()
    if not text or not label:
        raise BadSampleError(path, "empty text or label", "fix or remove the line", lineno)
    if labels is not None and label not in labels:
        raise BadSampleError(path, f"label {label!r} is not one of the training labels ({', '.join(labels[:10])})",
                             "fix the label or add it to the training file", lineno)
    return Sentence(text, label, f"{path}:{lineno}")


def read_text_lines(path: str) -> list[Sentence]:
    """`predict`: one sentence a line, UTF-8; an empty or undecodable line is an error naming it."""
    if not os.path.isfile(path):
        raise MissingInputError(f"--data.predict_file {path} does not exist")
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    if not raw_lines:
        raise BadInputError(f"{path} is empty: it needs one sentence a line")
    out = []
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadInputError(f"{path}:{lineno}: not UTF-8; save the file as UTF-8") from None
        if not text:
            raise BadInputError(f"{path}:{lineno}: empty line; give one sentence a line")
        out.append(Sentence(text, "", f"{path}:{lineno}"))
    return out


@lru_cache(maxsize=1)
def vader_analyzer():
    """VADER's rule-based analyser (vaderSentiment 3.3.2, a project dependency), built once."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_word_features(tokens: list[str]) -> Tensor:
    """(V, 2) per vocabulary word: its human-rated VADER valence / 4 (0 when not in the lexicon) and whether it
    negates (VADER's list, plus the clitic n't this tokenizer splits off)."""
    from vaderSentiment.vaderSentiment import NEGATE

    lexicon, negations = vader_analyzer().lexicon, {*NEGATE, "n't"}
    return torch.tensor([[lexicon.get(t, 0.0) / 4.0, float(t in negations)] for t in tokens])


class TextBatch(NamedTuple):
    tokens: Tensor  # (B, T) word ids, <pad> after each sentence's length
    lengths: Tensor  # (B,)
    labels: Tensor  # (B,) class ids, -1 when unknown (predict)
    ids: list[str]  # file:line of each sentence
    texts: list[str]


class SentenceDataset(Dataset):
    def __init__(self, sentences: list[Sentence], vocab: Vocabulary, class_names: list[str], max_tokens: int) -> None:
        self.sentences, self.classes = sentences, {c: i for i, c in enumerate(class_names)}
        # sentences are short: tokenize once
        self.ids = [[vocab.index.get(w, vocab.unk_id) for w in tokenize(s.text)[:max_tokens]] or [vocab.unk_id]
                    for s in sentences]

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> tuple[list[int], int, Sentence]:
        return self.ids[i], self.classes.get(self.sentences[i].label, -1), self.sentences[i]


def collate_sentences(samples: list[tuple[list[int], int, Sentence]]) -> TextBatch:
    lengths = torch.tensor([len(ids) for ids, _, _ in samples])
    tokens = torch.zeros(len(samples), int(lengths.max()), dtype=torch.long)  # 0 = <pad>
    for row, (ids, _, _) in enumerate(samples):
        tokens[row, : len(ids)] = torch.tensor(ids)
    labels = torch.tensor([label for _, label, _ in samples])
    return TextBatch(tokens, lengths, labels, [s.id for _, _, s in samples], [s.text for _, _, s in samples])


class SentimentDataModule(SplitDataModule):
    """Sentences -> word ids and a class.

    Args:
        train_file: your labelled training sentences (JSONL {"text", "label"} or TSV label<TAB>text); its labels
            (sorted) are the classes and its words the vocabulary. Unset: the packaged movie-review sentences.
        val_file: your validation sentences (same formats); needed with train_file.
        test_file: your test sentences.
        predict_file: a text file, one sentence a line, for `rnnsuite predict`.
        split_seed: seed of the default data's fixed train/val/test split (80/10/10 by a hash of each sentence).
        num_train_sentences: use only N training sentences, a fixed random subset (None: all); the same for val and test.
        num_val_sentences: see num_train_sentences.
        num_test_sentences: see num_train_sentences.
        min_word_freq: training words seen fewer times become <unk>.
        max_tokens: longer sentences are cut to this many tokens.
        batch_size: sentences per batch.
        num_workers: DataLoader worker processes (the sentences live in memory: 0 is fastest).
        vocab: use this vocabulary, one token a line, instead of building one (set from a checkpoint when
            evaluating it).
        class_names: use these classes instead of the training file's (set from a checkpoint).
        on_bad_sample: error (stop, naming the file and line) or skip (leave out and count) for an empty line,
            bytes that are not UTF-8, a malformed line, or a val/test label that is not a training label.
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        split_seed: int = 0,
        num_train_sentences: int | None = None,
        num_val_sentences: int | None = None,
        num_test_sentences: int | None = None,
        min_word_freq: int = 1,
        max_tokens: int = 100,
        batch_size: int = 32,
        num_workers: int = 0,
        vocab: str | None = None,
        class_names: list[str] | None = None,
        on_bad_sample: BadSamplePolicy = "error",
    ) -> None:
        super().__init__(on_bad_sample)
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.predict_file, self.max_tokens, self.batch_size, self.num_workers = predict_file, max_tokens, batch_size, num_workers
        self.limits = {"train": num_train_sentences, "val": num_val_sentences, "test": num_test_sentences}
        self.sentences: dict[str, list[Sentence]] = {}
        self.neutral_dropped = 0
        if train_file is None and (val_file or test_file):
            raise BadInputError("--data.val_file/--data.test_file need --data.train_file (its labels are the classes)")
        if train_file is None:
            self.class_names = list(class_names) if class_names else list(POLARITY)
            if self.class_names != POLARITY:
                raise BadInputError(f"the model's classes ({', '.join(self.class_names[:4])}) are not the movie reviews' "
                                    f"{POLARITY}; pass the --data.train_file/--data.test_file it was trained on")
            sentences, self.neutral_dropped = read_movie_reviews()
            for split in self.files:
                self.sentences[split] = [s for s in sentences if split_of(s.text, split_seed) == split]
        else:
            if vocab and class_names:  # evaluating a checkpoint: the training file is not needed
                self.class_names = list(class_names)
            else:
                self.sentences["train"] = read_labelled_file(train_file, self.on_bad_sample, self.skipped["train"])
                self.class_names = list(class_names) if class_names else sorted({s.label for s in self.sentences["train"]})
            for split in ("val", "test"):
                if self.files[split]:
                    self.sentences[split] = read_labelled_file(self.files[split], self.on_bad_sample, self.skipped[split],
                                                               self.class_names)
        for split, bad in self.skipped.items():
            warn_skipped(f"{split} sentences", bad)
        for split, limit in self.limits.items():
            if limit is not None and split in self.sentences and limit < len(self.sentences[split]):
                # a fixed random subset: files are often sorted by label (the movie reviews are), a prefix is not
                keep = sorted(random.Random(f"{split_seed}|{split}").sample(range(len(self.sentences[split])), limit))
                self.sentences[split] = [self.sentences[split][i] for i in keep]
        # Built in __init__ so the CLI can hand `vocab` and `class_names` to the model before any loader exists.
        train_words = (tokenize(s.text) for s in self.sentences.get("train", []))
        self.vocabulary = Vocabulary(vocab.split("\n")) if vocab else Vocabulary.build(train_words, min_word_freq)

    @property
    def vocab(self) -> str:
        """The vocabulary as one string, a token a line: what checkpoints store (jsonargparse checks and copies a
        list element by element on every parse, which took minutes for a 16,000-word list)."""
        return "\n".join(self.vocabulary.tokens)

    @property
    def data_source(self) -> str:
        return f"sentences of {self.files['train']}" if self.files["train"] else "rated movie-review sentences"

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict":
            if self.predict_file is None:
                raise BadInputError("rnnsuite predict needs --data.predict_file FILE (a text file, one sentence a line)")
            sentences = read_text_lines(self.predict_file)
        elif split not in self.sentences:
            raise BadInputError(f"no {split} sentences: pass --data.{split}_file (JSONL or TSV)")
        else:
            sentences = self.sentences[split]
        return SentenceDataset(sentences, self.vocabulary, self.class_names, self.max_tokens)

    def collate(self, split: str) -> Callable:
        return collate_sentences
