"""Captioning data: generated scenes by default, or Karpathy split JSON + an image folder."""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSampleError, BadSamplePolicy, SkippedBatch, drop_skipped, load_or_skip, warn_skipped
from datamodules.base import SplitDataModule
from datamodules import scenes
from datamodules.coco import read_coco_captions
from datamodules.karpathy import CaptionRecord, read_karpathy_json
from datamodules.vocab import Vocabulary

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# ImageNet statistics: what torchvision's pretrained ResNets expect; harmless for the small CNN.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class CaptionSample(NamedTuple):
    image: Tensor                   # (3, H, W) normalised
    references: list[list[str]]     # every reference caption, as words
    image_id: str


class CaptionBatch(NamedTuple):
    images: Tensor                       # (B, 3, H, W)
    tokens: Tensor                       # (B, L) <bos> w1 .. wn <eos>, then <pad>
    references: list[list[list[str]]]   # per image, all reference captions
    image_ids: list[str]
    skipped: tuple[str, ...] = ()       # samples left out of this batch (on_bad_sample=skip), described


def to_tensor(pixels: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float, normalised."""
    return (torch.tensor(pixels).permute(2, 0, 1).float() / 255.0 - MEAN) / STD


def load_image(path: str, image_size: int, skippable: bool = True) -> Tensor:
    """PIL's errors (missing, truncated, not an image) become a `BadSampleError` naming the file."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            return to_tensor(np.asarray(img))
    except FileNotFoundError as err:
        raise BadSampleError(path, "image not found", "check --data.image_root and the JSON's filepath/filename",
                             skippable=skippable) from err
    except OSError as err:  # PIL's UnidentifiedImageError and "image file is truncated" are OSErrors
        raise BadSampleError(path, f"cannot read image ({err})", "the file is corrupt or not an image: replace or "
                             "remove it", skippable=skippable) from err


class SceneDataset(Dataset):
    """Generated scenes, rendered once into memory (uint8, ~12 kB each at 64 x 64)."""

    def __init__(self, split_scenes: Sequence[scenes.Scene], image_size: int) -> None:
        self.scenes = list(split_scenes)
        self.pixels = np.stack([scenes.render(s, image_size) for s in self.scenes])  # (N, H, W, 3)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> CaptionSample:
        return CaptionSample(to_tensor(self.pixels[i]), self.scenes[i].captions(), f"scene{i:06d}")


class RecordDataset(Dataset):
    """Images on disk with reference captions (Karpathy or COCO JSON); in skip mode an unreadable image
    comes back as a `SkippedSample`."""

    def __init__(self, records: Sequence[CaptionRecord], image_size: int, on_bad_sample: BadSamplePolicy = "error") -> None:
        self.records, self.image_size, self.on_bad_sample = list(records), image_size, on_bad_sample

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> CaptionSample:
        rec = self.records[i]
        return load_or_skip(self.on_bad_sample, lambda: CaptionSample(
            load_image(rec.image_path, self.image_size), rec.captions, rec.image_id))


class FolderDataset(Dataset):
    """Every image file in a folder, for `predict`."""

    def __init__(self, folder: str, image_size: int) -> None:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--data.predict_dir {folder} is not a folder")
        self.paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in --data.predict_dir {folder}")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> CaptionSample:
        # predict captions every file it is given: a bad one is an error (it has no skip mode)
        return CaptionSample(load_image(self.paths[i], self.image_size, skippable=False), [], os.path.basename(self.paths[i]))


class CaptionCollate:
    """Stacks images and turns one caption per image into padded token ids.

    Training draws one reference at random per image each time (all phrasings get seen);
    evaluation uses the first reference for the loss and keeps all of them for BLEU.
    """

    def __init__(self, vocab: Vocabulary, max_caption_len: int, random_reference: bool) -> None:
        self.vocab, self.max_caption_len, self.random_reference = vocab, max_caption_len, random_reference

    def __call__(self, samples: list[CaptionSample]) -> CaptionBatch | SkippedBatch:
        samples, skipped = drop_skipped(samples)
        if not samples:
            return SkippedBatch(skipped)
        rows = []
        for s in samples:
            words = (random.choice(s.references) if self.random_reference else s.references[0]) if s.references else []
            rows.append(torch.tensor(self.vocab.encode(words[: self.max_caption_len])))
        tokens = pad_sequence(rows, batch_first=True, padding_value=self.vocab.pad_id)
        return CaptionBatch(
            torch.stack([s.image for s in samples]), tokens, [s.references for s in samples], [s.image_id for s in samples],
            skipped,
        )


class CaptioningDataModule(SplitDataModule):
    """Image captioning data.

    Args:
        karpathy_json: Karpathy split JSON (dataset_coco.json, dataset_flickr8k.json); unset = generated scenes.
        image_root: folder the Karpathy JSON's filepath/filename are relative to.
        coco_train_json: COCO captions file for training (annotations/captions_train2014.json); with
            coco_val_json (validation, and test unless coco_test_json is given) instead of Karpathy JSON.
        coco_val_json: COCO captions file for validation.
        coco_test_json: COCO captions file for testing (default: coco_val_json).
        coco_train_images: image folder of coco_train_json (e.g. train2014/).
        coco_val_images: image folder of coco_val_json.
        coco_test_images: image folder of coco_test_json (default: coco_val_images).
        predict_dir: folder of images to caption with `rnnsuite predict`.
        image_size: images are resized to image_size x image_size.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (generated scenes live in memory: 0 is fastest).
        min_word_freq: words rarer than this in the training captions become <unk>.
        max_caption_len: training captions are cut to this many words; generation stops after it.
        num_train_scenes: generated training scenes.
        num_val_scenes: generated validation scenes.
        num_test_scenes: generated test scenes.
        seed: seed of the generated scenes.
        vocab: use this token list instead of building one from the training captions (set from a
            checkpoint when evaluating it).
        on_bad_sample: error (stop, naming the file and entry) or skip (leave out and count, reported every
            epoch) for an image that is missing or unreadable, or has no non-empty caption.
    """

    def __init__(
        self,
        karpathy_json: str | None = None,
        image_root: str | None = None,
        coco_train_json: str | None = None,
        coco_val_json: str | None = None,
        coco_test_json: str | None = None,
        coco_train_images: str | None = None,
        coco_val_images: str | None = None,
        coco_test_images: str | None = None,
        predict_dir: str | None = None,
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        min_word_freq: int = 1,
        max_caption_len: int = 20,
        num_train_scenes: int = 20000,
        num_val_scenes: int = 1000,
        num_test_scenes: int = 2000,
        seed: int = 0,
        vocab: list[str] | None = None,
        on_bad_sample: BadSamplePolicy = "error",
    ) -> None:
        super().__init__(on_bad_sample)
        self.karpathy_json, self.image_root, self.predict_dir = karpathy_json, image_root, predict_dir
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.max_caption_len = max_caption_len
        self.counts = {"train": num_train_scenes, "val": num_val_scenes, "test": num_test_scenes}
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self.records: dict[str, list[CaptionRecord]] | None = None
        if karpathy_json is not None:
            self.records = read_karpathy_json(karpathy_json, image_root or os.path.dirname(karpathy_json),
                                              self.on_bad_sample, self.skipped)
            if not self.records["train"]:
                raise ValueError(f"{karpathy_json}: no images in the train/restval split; cannot build a vocabulary")
        elif coco_train_json is not None or coco_val_json is not None:
            if not (coco_train_json and coco_val_json and coco_train_images and coco_val_images):
                raise ValueError("COCO captions need --data.coco_train_json, --data.coco_val_json, "
                                 "--data.coco_train_images and --data.coco_val_images")
            self.records = {
                "train": read_coco_captions(coco_train_json, coco_train_images, self.on_bad_sample, self.skipped["train"]),
                "val": read_coco_captions(coco_val_json, coco_val_images, self.on_bad_sample, self.skipped["val"]),
                "test": read_coco_captions(coco_test_json or coco_val_json, coco_test_images or coco_val_images,
                                           self.on_bad_sample, self.skipped["test"]),
            }
        if self.records is not None:
            for split, records in self.records.items():
                warn_skipped(f"{split} captions", self.skipped[split], len(records) + len(self.skipped[split]))
            train_captions = [c for r in self.records["train"] for c in r.captions]
        else:
            self.scene_splits = {s: scenes.sample_split(s, n, seed, image_size) for s, n in self.counts.items()}
            train_captions = [c for scene in self.scene_splits["train"] for c in scene.captions()]
        # Built in __init__ so the CLI can hand `vocab` to the model before anything is rendered.
        self.vocabulary = Vocabulary(vocab) if vocab else Vocabulary.build(train_captions, min_word_freq)

    @property
    def vocab(self) -> list[str]:
        return self.vocabulary.tokens

    def _dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            if split == "predict":
                if self.predict_dir is None:
                    raise ValueError("rnnsuite predict needs --data.predict_dir DIR (a folder of images)")
                self.datasets[split] = FolderDataset(self.predict_dir, self.image_size)
            elif self.records is not None:
                self.datasets[split] = RecordDataset(self.records[split], self.image_size, self.on_bad_sample)
            else:
                self.datasets[split] = SceneDataset(self.scene_splits[split], self.image_size)
        return self.datasets[split]

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=self.batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=CaptionCollate(self.vocabulary, self.max_caption_len, random_reference=split == "train"),
        )
