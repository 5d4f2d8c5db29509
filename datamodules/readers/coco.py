"""Reader for COCO caption annotations (`annotations/captions_train2014.json` etc.) with their image folder."""
from __future__ import annotations

import os
import re
from collections import defaultdict

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, handle
from datamodules.readers.karpathy import CaptionRecord, check_image, load_json

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-case words without punctuation, close to coco-caption's PTB tokenisation for English captions."""
    return _WORD.findall(caption.lower())


def read_coco_captions(json_path: str, image_dir: str, policy: BadSamplePolicy = "error",
                       skipped: list[str] | None = None) -> list[CaptionRecord]:
    """COCO captions JSON (`images[].id/file_name`, `annotations[].image_id/caption`) -> one record per image.

    Blank captions are dropped; an image left without a caption, or whose file is missing, is a bad sample
    (an error, or with policy "skip" left out and listed in `skipped`)."""
    skipped = skipped if skipped is not None else []
    data = load_json(json_path, "COCO captions file", "a COCO captions_*.json file",
                     "; pass the annotations file, e.g. --data.coco_train_json annotations/captions_train2014.json")
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise BadInputError(f"{json_path}: expected 'images' and 'annotations' (COCO captions format)")
    captions: dict[int, list[list[str]]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if "image_id" not in ann or "caption" not in ann:
            raise BadInputError(f"{json_path}: annotations[{i}] needs image_id and caption")
        words = tokenize(ann["caption"])
        if words:
            captions[ann["image_id"]].append(words)
    records = []
    for i, image in enumerate(data["images"]):
        if "id" not in image or "file_name" not in image:
            raise BadInputError(f"{json_path}: images[{i}] needs id and file_name")
        if not captions.get(image["id"]):  # cannot be scored or trained on
            handle(policy, BadSampleError(json_path, f"{image['file_name']} has no non-empty caption",
                                          "add a caption to annotations or remove the image", f"images[{i}]"), skipped)
            continue
        record = CaptionRecord(os.path.join(image_dir, image["file_name"]), captions[image["id"]], str(image["id"]))
        if check_image(json_path, f"images[{i}]", record, policy, skipped):
            records.append(record)
    if not records:
        raise BadInputError(f"{json_path}: no image has a non-empty caption and a file on disk")
    return records
