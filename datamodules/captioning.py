"""Captioning data: generated scenes by default, or Karpathy split JSON + an image folder."""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from datamodules.augment import train_augmentation
from datamodules.bad_samples import (BadInputError, BadSampleError, BadSamplePolicy, SkippedBatch, SkippedSample,
                                     drop_skipped, load_or_skip, warn_skipped)
from datamodules.base import MEAN, STD, SplitDataModule, read_predict_files
from datamodules.synthetic import scenes
from datamodules.readers.coco import read_coco_captions
from datamodules.feature_cache import FeatureTable, array_key, file_key, load_or_build
from datamodules.readers.karpathy import CaptionRecord, read_karpathy_json
from datamodules.vocab import Vocabulary

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# ImageNet statistics: what torchvision's pretrained ResNets expect; harmless for the small CNN.


class CaptionSample(NamedTuple):
    image: Tensor | None            # (3, H, W) normalised; None when cached features stand in for it
    references: list[list[str]]     # every reference caption, as words
    image_id: str
    features: Tensor | None = None  # (T_enc, D) cached encoder output


class CaptionBatch(NamedTuple):
    images: Tensor | None                # (B, 3, H, W); None in training batches with cached features
    tokens: Tensor                       # (B, L) <bos> w1 .. wn <eos>, then <pad>
    references: list[list[list[str]]]   # per image, all reference captions
    ids: list[str]
    skipped: tuple[str, ...] = ()       # samples left out of this batch (on_bad_sample=skip), described
    features: Tensor | None = None       # (B, T_enc, D) cached output of a frozen encoder, used instead of images


Augment = Callable[[Tensor], Tensor]  # (3, H, W) uint8 -> (3, S, S) uint8, see datamodules/augment.py
TRANSFORM_KEY = "captioning|resize-bilinear-square|imagenet-normalised"  # the eval transform cached features see


def to_tensor(pixels: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float, normalised."""
    return (torch.tensor(pixels).permute(2, 0, 1).float() / 255.0 - MEAN) / STD


def load_image(path: str, image_size: int, skippable: bool = True, augment: Augment | None = None) -> Tensor:
    """PIL's errors (missing, truncated, not an image) become a `BadSampleError` naming the file. Resized to a
    square, or with `augment` a random crop of the whole picture resized to one."""
    try:
        with Image.open(path) as img:
            if augment is not None:
                pixels = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)  # (3, H, W) uint8
                return to_tensor(augment(pixels).permute(1, 2, 0).numpy())
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

    def __init__(self, split_scenes: Sequence[scenes.Scene], image_size: int, augment: Augment | None = None) -> None:
        self.scenes = list(split_scenes)
        self.pixels = np.stack([scenes.render(s, image_size) for s in self.scenes])  # (N, H, W, 3)
        self.augment = augment
        self.features: FeatureTable | None = None  # set by `use_features`
        self.with_pixels = True

    def __len__(self) -> int:
        return len(self.scenes)

    def item_keys(self) -> list[str]:
        split = array_key(self.pixels)
        return [f"{split}|{i}" for i in range(len(self))]

    def pixels_of(self, i: int) -> Tensor | None:
        if self.augment is not None:
            return to_tensor(self.augment(torch.from_numpy(self.pixels[i]).permute(2, 0, 1)).permute(1, 2, 0).numpy())
        return to_tensor(self.pixels[i])

    def __getitem__(self, i: int) -> CaptionSample:
        features = None if self.features is None else torch.from_numpy(self.features[i][0].astype(np.float32))
        image = self.pixels_of(i) if self.with_pixels or features is None else None
        return CaptionSample(image, self.scenes[i].captions(), f"scene{i:06d}", features)


class RecordDataset(Dataset):
    """Images on disk with reference captions (Karpathy or COCO JSON); in skip mode an unreadable image
    comes back as a `SkippedSample`."""

    def __init__(self, records: Sequence[CaptionRecord], image_size: int, on_bad_sample: BadSamplePolicy = "error",
                 augment: Augment | None = None) -> None:
        self.records, self.image_size, self.on_bad_sample = list(records), image_size, on_bad_sample
        self.augment = augment
        self.features: FeatureTable | None = None  # set by `use_features`
        self.with_pixels = True

    def __len__(self) -> int:
        return len(self.records)

    def item_keys(self) -> list[str]:
        return [f"{file_key(r.image_path)}|{self.image_size}" for r in self.records]

    def pixels_of(self, i: int) -> Tensor | None:
        """The image, or None for an unreadable one in skip mode."""
        image = load_or_skip(self.on_bad_sample, lambda: load_image(self.records[i].image_path, self.image_size,
                                                                    augment=self.augment))
        return None if isinstance(image, SkippedSample) else image

    def __getitem__(self, i: int) -> CaptionSample:
        rec = self.records[i]
        if self.features is not None and self.features.valid[i]:
            features = torch.from_numpy(self.features[i][0].astype(np.float32))
            if not self.with_pixels:
                return CaptionSample(None, rec.captions, rec.image_id, features)
            return load_or_skip(self.on_bad_sample, lambda: CaptionSample(
                load_image(rec.image_path, self.image_size), rec.captions, rec.image_id, features))
        return load_or_skip(self.on_bad_sample, lambda: CaptionSample(
            load_image(rec.image_path, self.image_size, augment=self.augment), rec.captions, rec.image_id))


class FolderDataset(Dataset):
    """The image files of a predict folder (read once already by `read_predict_files`, so all of them load)."""

    def __init__(self, paths: list[str], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> CaptionSample:
        return CaptionSample(load_image(self.paths[i], self.image_size, skippable=False), [], os.path.basename(self.paths[i]))


def _one(image: Tensor | None) -> Tensor | None:
    """(3, H, W) -> (1, 3, H, W): one cached row per image."""
    return None if image is None else image[None]


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
        images = torch.stack([s.image for s in samples]) if samples[0].image is not None else None
        features = torch.stack([s.features for s in samples]) if samples[0].features is not None else None
        return CaptionBatch(images, tokens, [s.references for s in samples], [s.image_id for s in samples], skipped,
                            features)


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
        augment: training images get a random resized crop and brightness/contrast/saturation jitter (no hue:
            captions name colours); for small real sets. Excludes cached features (`--model.cache_features`).
        crop_scale: area fraction range of the random crop (high enough that objects stay in the picture).
        color_jitter: brightness/contrast/saturation change, +- this fraction.
        horizontal_flip: also mirror training images half of the time; opt-in, because a mirror image turns
            "left of" into "right of" and makes such captions wrong.
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
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.8, 1.0),
        color_jitter: float = 0.3,
        horizontal_flip: bool = False,
    ) -> None:
        super().__init__(on_bad_sample)
        self.augment = train_augmentation(image_size, crop_scale, color_jitter, horizontal_flip) if augment else None
        self.karpathy_json, self.image_root, self.predict_dir = karpathy_json, image_root, predict_dir
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.max_caption_len = max_caption_len
        self.counts = {"train": num_train_scenes, "val": num_val_scenes, "test": num_test_scenes}
        self.seed = seed
        self.records: dict[str, list[CaptionRecord]] | None = None
        if karpathy_json is not None:
            self.records = read_karpathy_json(karpathy_json, image_root or os.path.dirname(karpathy_json),
                                              self.on_bad_sample, self.skipped)
            if not self.records["train"]:
                raise BadInputError(f"{karpathy_json}: no images in the train/restval split; cannot build a vocabulary")
        elif coco_train_json is not None or coco_val_json is not None:
            if not (coco_train_json and coco_val_json and coco_train_images and coco_val_images):
                raise BadInputError("COCO captions need --data.coco_train_json, --data.coco_val_json, "
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
    def data_source(self) -> str:
        """What a model fitted on this data was trained on (stored in its checkpoint, told by predict)."""
        if self.records is None:
            return "generated scenes of coloured shapes"
        return f"captions of {self.karpathy_json or 'COCO'}"

    @property
    def vocab(self) -> list[str]:
        return self.vocabulary.tokens

    @property
    def train_references(self) -> list[list[list[str]]]:
        """Every training image's reference captions, as words (SCST's CIDEr-D document frequencies)."""
        if self.records is not None:
            return [list(r.captions) for r in self.records["train"]]
        return [scene.captions() for scene in self.scene_splits["train"]]

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict":
            paths = read_predict_files(self.predict_dir, self.predict_paths(IMAGE_EXTENSIONS, "images"),
                                       lambda path: load_image(path, self.image_size), "images", self.on_bad_sample,
                                       self.skipped["predict"])
            return FolderDataset(paths, self.image_size)
        augment = self.augment if split == "train" else None
        if self.records is not None:
            return RecordDataset(self.records[split], self.image_size, self.on_bad_sample, augment)
        return SceneDataset(self.scene_splits[split], self.image_size, augment)

    def attach_features(self, split: str, dataset: RecordDataset | SceneDataset) -> None:
        """Encode the split once into the feature cache (or find it there) and let the dataset read it."""
        keys = dataset.item_keys()
        transform = f"{TRANSFORM_KEY}|{self.image_size}"
        dataset.features = load_or_build(f"captioning-{split}", keys, [1] * len(keys), transform, self.feature_source,
                                         lambda i: _one(dataset.pixels_of(i)), self.num_workers)
        dataset.with_pixels = split == "val"  # the logged validation samples show the image

    def collate(self, split: str) -> CaptionCollate:
        return CaptionCollate(self.vocabulary, self.max_caption_len, random_reference=split == "train")
