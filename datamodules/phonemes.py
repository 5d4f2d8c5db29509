"""Phoneme recognition data: an espeak-ng corpus generated once and cached (default; synthetic/speech_corpus.py),
JSONL manifests, or TIMIT (readers/speech.py).

A speaker of the generated corpus is an (accent, variant) pair; the validation and test variants never occur in
training, and the three splits' sentences are disjoint too.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from datamodules.bad_samples import (
    BadInputError, BadSampleError, BadSamplePolicy, SkippedBatch, drop_skipped, handle, load_or_skip, warn_skipped,
)
from datamodules.base import SplitDataModule, read_predict_files
from datamodules.synthetic.speech_corpus import generate_corpus
from datamodules.readers.speech import (
    TIMIT_61_TO_39,
    SpeechRecord,
    AUDIO_EXTENSIONS,
    read_audio,
    read_manifest,
    read_timit,
)

class PhonemeSample(NamedTuple):
    audio: Tensor          # (S,) float32 waveform
    phonemes: list[str]    # reference phonemes ([] when unknown, e.g. predict)
    utt_id: str


class PhonemeBatch(NamedTuple):
    audio: Tensor              # (B, S) zero-padded waveforms
    audio_lengths: Tensor      # (B,) valid samples
    targets: Tensor            # (B, L) phoneme ids 1..P (0 = CTC blank, also the padding)
    target_lengths: Tensor     # (B,)
    phonemes: list[list[str]]  # reference phonemes as strings (scoring uses these, unknown phonemes included)
    ids: list[str]
    skipped: tuple[str, ...] = ()  # utterances left out of this batch (on_bad_sample=skip), described


# --- datasets ----------------------------------------------------------------------------------------
class GeneratedDataset(Dataset):
    def __init__(self, items: list[dict], split: str) -> None:
        self.items, self.split = items, split

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> PhonemeSample:
        item = self.items[i]
        return PhonemeSample(item["audio"].float() / 32768.0, item["phonemes"], f"{self.split}{i:05d}_{item['speaker']}")

    def num_samples(self, i: int) -> int:
        return self.items[i]["audio"].shape[0]


class FileDataset(Dataset):
    """Records (or bare audio files for predict) read from disk on access; in skip mode an unreadable or empty
    audio file comes back as a `SkippedSample`. `on_bad_sample=None` (predict): always an error."""

    def __init__(self, records: Sequence[SpeechRecord], sample_rate: int, on_bad_sample: BadSamplePolicy | None = "error"
                 ) -> None:
        self.records, self.sample_rate, self.on_bad_sample = list(records), sample_rate, on_bad_sample

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> PhonemeSample:
        rec = self.records[i]
        skippable = self.on_bad_sample is not None
        return load_or_skip(self.on_bad_sample or "error", lambda: PhonemeSample(
            read_audio(rec.audio_path, self.sample_rate, skippable), rec.phonemes, rec.utt_id))


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length utterances (less padding, fewer wasted RNN steps); shuffled pools when training."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50) -> None:
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = list(lengths), batch_size, shuffle, seed, pool
        self.epoch = 0

    def __iter__(self):
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        if self.shuffle:
            rng.shuffle(order)
        size = self.batch_size * self.pool if self.shuffle else len(order)
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: self.lengths[i])
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class PhonemeCollate:
    """Pads waveforms and maps phonemes to ids 1..P (0 is the CTC blank); phonemes outside the inventory are left
    out of the CTC targets but kept in the references, so they count as errors."""

    def __init__(self, phonemes: Sequence[str]) -> None:
        self.index = {p: i + 1 for i, p in enumerate(phonemes)}

    def __call__(self, samples: list[PhonemeSample]) -> PhonemeBatch | SkippedBatch:
        samples, skipped = drop_skipped(samples)
        if not samples:
            return SkippedBatch(skipped)
        targets = [torch.tensor([self.index[p] for p in s.phonemes if p in self.index], dtype=torch.long) for s in samples]
        return PhonemeBatch(
            pad_sequence([s.audio for s in samples], batch_first=True),
            torch.tensor([s.audio.shape[0] for s in samples]),
            pad_sequence(targets, batch_first=True) if targets else torch.zeros(0, 0, dtype=torch.long),
            torch.tensor([len(t) for t in targets]),
            [list(s.phonemes) for s in samples],
            [s.utt_id for s in samples],
            skipped,
        )


class PhonemeDataModule(SplitDataModule):
    """Speech with phoneme labels.

    Args:
        train_manifest: JSONL manifest for training ({"audio": ..., "phonemes" or "text": ...} per line);
            unset (and no timit_root) = the generated espeak corpus.
        val_manifest: JSONL manifest for validation.
        test_manifest: JSONL manifest for testing.
        timit_root: the TIMIT corpus folder (TRAIN/, TEST/); labels are the 61 phones, scored folded to 39.
        predict_dir: folder of audio files to transcribe with `rnnsuite predict`.
        skip_oov: manifests with "text": skip lines with words missing from the CMU dictionary instead of failing
            (on_bad_sample skip skips them too, with every other bad sample).
        sample_rate: audio is resampled to this rate (Hz).
        batch_size: utterances per batch (batched by similar length).
        num_workers: DataLoader worker processes.
        num_train_utterances: generated training utterances.
        num_val_utterances: generated validation utterances.
        num_test_utterances: generated test utterances.
        voices: espeak-ng accents every split draws from.
        train_variants: espeak-ng voice variants (speakers) of the training split ("" = the accent's own voice).
        val_variants: variants of the validation split; must not occur in training.
        test_variants: variants of the test split; must not occur in training or validation.
        rate_range: speaking rate range (words per minute), drawn per utterance.
        pitch_range: pitch range (0..100), drawn per utterance.
        seed: seed of the generated corpus.
        phonemes: use this phoneme inventory instead of the training labels' (set from a checkpoint when evaluating).
        phoneme_folding: phoneme -> scoring phoneme ("" drops it); default 61 -> 39 for TIMIT, none otherwise.
        on_bad_sample: error (stop, naming the file and line) or skip (leave out and count, reported every epoch)
            for a manifest line that is malformed, empty or names a missing file, a TIMIT utterance without a
            valid .PHN, audio that cannot be decoded or is empty, and a training label outside `phonemes`.
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        timit_root: str | None = None,
        predict_dir: str | None = None,
        skip_oov: bool = False,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        num_train_utterances: int = 4000,
        num_val_utterances: int = 200,
        num_test_utterances: int = 400,
        voices: list[str] = ["en-us", "en-us-nyc", "en"],  # noqa: B006 - jsonargparse needs a literal default
        train_variants: list[str] = ["", "m1", "m2", "m3", "m4", "m5", "m8", "f1", "f2", "f3", "john", "steph"],  # noqa: B006
        val_variants: list[str] = ["m6", "f4"],  # noqa: B006
        test_variants: list[str] = ["m7", "f5"],  # noqa: B006
        rate_range: tuple[int, int] = (140, 200),
        pitch_range: tuple[int, int] = (25, 75),
        seed: int = 0,
        phonemes: list[str] | None = None,
        phoneme_folding: dict[str, str] | None = None,
        on_bad_sample: BadSamplePolicy = "error",
    ) -> None:
        super().__init__(on_bad_sample)
        self.predict_dir, self.sample_rate = predict_dir, sample_rate
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.records: dict[str, list[SpeechRecord]] = {}
        self._corpus_args: tuple | None = None
        self._corpus: dict[str, list[dict]] = {}  # the splits spoken or loaded so far
        if timit_root is not None:
            self.records = read_timit(timit_root, self.on_bad_sample, self.skipped)
            default_folding = TIMIT_61_TO_39
        elif train_manifest is not None:
            for split, path in (("train", train_manifest), ("val", val_manifest), ("test", test_manifest)):
                if path is not None:
                    self.records[split] = read_manifest(path, skip_oov, self.on_bad_sample, self.skipped[split])
            default_folding = None
        elif val_manifest is not None or test_manifest is not None:
            raise BadInputError("--data.val_manifest/--data.test_manifest need --data.train_manifest too")
        else:
            train_set = set(train_variants)
            if train_set & set(val_variants) or train_set & set(test_variants) or set(val_variants) & set(test_variants):
                raise BadInputError("train_variants, val_variants and test_variants must be disjoint (unseen speakers)")
            counts = {"train": num_train_utterances, "val": num_val_utterances, "test": num_test_utterances}
            variants = {"train": train_variants, "val": val_variants, "test": test_variants}
            self._corpus_args = (counts, voices, variants, tuple(rate_range), tuple(pitch_range), sample_rate, seed)
            default_folding = None
        for split, records in self.records.items():
            warn_skipped(f"{split} utterances", self.skipped[split], len(records) + len(self.skipped[split]))
        if phonemes:  # e.g. adopted from a checkpoint: `predict` then never needs to generate the corpus
            self.phonemes = list(phonemes)
        else:
            train_labels = ([it["phonemes"] for it in self.corpus_split("train")] if self._corpus_args is not None
                            else [r.phonemes for r in self.records.get("train", [])])
            self.phonemes = sorted({p for labels in train_labels for p in labels})
        self.phoneme_folding = phoneme_folding if phoneme_folding is not None else default_folding

    def corpus_split(self, split: str) -> list[dict]:
        """One split of the generated espeak corpus, spoken (or loaded from the cache) on first use: evaluation
        never speaks the training split."""
        if self._corpus_args is None:
            raise ValueError("this datamodule reads manifests/TIMIT; it has no generated corpus")
        if split not in self._corpus:
            self._corpus |= generate_corpus(*self._corpus_args, splits=[split])
        return self._corpus[split]

    @property
    def corpus(self) -> dict[str, list[dict]]:
        """The whole generated corpus ({split: utterances})."""
        return {split: self.corpus_split(split) for split in ("train", "val", "test")}

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict":
            paths = read_predict_files(self.predict_dir, self.predict_paths(AUDIO_EXTENSIONS, "audio files"),
                                       lambda path: read_audio(path, self.sample_rate), "audio files",
                                       self.on_bad_sample, self.skipped["predict"])
            return FileDataset([SpeechRecord(p, [], os.path.basename(p)) for p in paths], self.sample_rate, on_bad_sample=None)
        if self._corpus_args is not None:  # only this split is spoken (or loaded)
            return GeneratedDataset(self.corpus_split(split), split)
        if split not in self.records:
            raise BadInputError(f"no {split} data: pass --data.{split}_manifest")
        records = self.records[split] if split != "train" else self._known_labels(self.records[split])
        return FileDataset(records, self.sample_rate, self.on_bad_sample)

    def _known_labels(self, records: list[SpeechRecord]) -> list[SpeechRecord]:
        """Training utterances whose phonemes are all in the inventory (which differs from the training labels'
        only when `phonemes` is given). Evaluation keeps unknown phonemes: they are scored as errors."""
        inventory, kept = set(self.phonemes), []
        for rec in records:
            unknown = sorted(set(rec.phonemes) - inventory)
            if unknown:
                handle(self.on_bad_sample, BadSampleError(
                    rec.audio_path, f"phonemes {' '.join(unknown)} are not in the model's inventory",
                    "fix the labels, or train without --data.phonemes so the inventory comes from the data"),
                    self.skipped["train"])
            else:
                kept.append(rec)
        return kept

    def collate(self, split: str) -> PhonemeCollate:
        return PhonemeCollate(self.phonemes)

    def batching(self, split: str, dataset: Dataset) -> dict[str, Any]:
        # Under DDP, Lightning shards plain loaders (and SplitDataModule shards evaluation without repeats);
        # it cannot shard a batch sampler, so distributed runs batch in data order instead of by length.
        if isinstance(dataset, GeneratedDataset) and not self.distributed:
            lengths = [dataset.num_samples(i) for i in range(len(dataset))]
            return {"batch_sampler": LengthBucketSampler(lengths, self.batch_size, shuffle=split == "train", seed=self.seed)}
        return super().batching(split, dataset)  # lengths unknown before reading the files

