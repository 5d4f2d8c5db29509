"""Reader for COCO caption annotations (`annotations/captions_train2014.json` etc.) with their image folder."""
from __future__ import annotations

import os
import re
from collections import defaultdict

from datamodules.karpathy import CaptionRecord, load_json

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-case words without punctuation, close to coco-caption's PTB tokenisation for English captions."""
    return _WORD.findall(caption.lower())


def read_coco_captions(json_path: str, image_dir: str) -> list[CaptionRecord]:
    """COCO captions JSON (`images[].id/file_name`, `annotations[].image_id/caption`) -> one record per image."""
    data = load_json(json_path, "COCO captions file", "a COCO captions_*.json file")
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{json_path}: expected 'images' and 'annotations' (COCO captions format)")
    captions: dict[int, list[list[str]]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if "image_id" not in ann or "caption" not in ann:
            raise ValueError(f"{json_path}: annotations[{i}] needs image_id and caption")
        words = tokenize(ann["caption"])
        if words:
            captions[ann["image_id"]].append(words)
    records = []
    for i, image in enumerate(data["images"]):
        if "id" not in image or "file_name" not in image:
            raise ValueError(f"{json_path}: images[{i}] needs id and file_name")
        if captions.get(image["id"]):  # images without a caption cannot be scored or trained on
            records.append(CaptionRecord(os.path.join(image_dir, image["file_name"]), captions[image["id"]], str(image["id"])))
    if not records:
        raise ValueError(f"{json_path}: no image has a non-empty caption")
    return records
