"""Reader for the Karpathy split JSON used by the captioning literature (dataset_coco.json, dataset_flickr8k.json)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, MissingInputError, handle

# The Karpathy splits call the extra COCO val images "restval"; the literature trains on them.
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


@dataclass(frozen=True)
class CaptionRecord:
    image_path: str
    captions: list[list[str]]
    image_id: str


def load_json(json_path: str, name: str, expected: str, hint: str = "") -> object:
    """Parse a caption JSON file; a missing or malformed file is an error naming it and what was expected."""
    try:
        with open(json_path) as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise MissingInputError(f"{name} not found: {json_path}{hint}") from err
    except json.JSONDecodeError as err:
        raise BadInputError(f"{json_path}: not valid JSON ({err}); is it {expected}?") from err


def check_image(json_path: str, where: str, record: CaptionRecord, policy: BadSamplePolicy, skipped: list[str]) -> bool:
    """Whether the record's image file exists; a missing one is an error naming the entry, or a counted skip."""
    if os.path.isfile(record.image_path):
        return True
    handle(policy, BadSampleError(json_path, f"image not found: {record.image_path}",
                                  "check --data.image_root (or the image folder) and the entry's file name", where), skipped)
    return False


def read_karpathy_json(json_path: str, image_root: str, policy: BadSamplePolicy = "error",
                       skipped: dict[str, list[str]] | None = None) -> dict[str, list[CaptionRecord]]:
    """Karpathy JSON -> {"train": [...], "val": [...], "test": [...]}.

    Each `images[]` entry needs `filename`, `split` and `sentences[].tokens`; `filepath` (e.g. COCO's
    "val2014") is joined between `image_root` and `filename` when present. An entry without a non-empty caption
    or whose image is missing is a bad sample: an error, or with policy "skip" left out and listed in
    `skipped[split]`.
    """
    skipped = skipped if skipped is not None else {}
    data = load_json(json_path, "Karpathy JSON", "the Karpathy split file", "; pass --data.karpathy_json PATH")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInputError(f"{json_path}: expected an object with an 'images' list (Karpathy split format)")
    splits: dict[str, list[CaptionRecord]] = {"train": [], "val": [], "test": []}
    for i, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"  # structural problems: the file is not in the Karpathy format
        for key in ("filename", "split", "sentences"):
            if key not in entry:
                raise BadInputError(f"{where} has no {key!r}; every image needs filename, split and sentences")
        split = _SPLIT_ALIASES.get(entry["split"])
        if split is None:
            raise BadInputError(f"{where}: unknown split {entry['split']!r}; expected one of {sorted(_SPLIT_ALIASES)}")
        captions = [[t.lower() for t in s.get("tokens", [])] for s in entry["sentences"]]
        captions = [c for c in captions if c]
        split_skipped = skipped.setdefault(split, [])
        if not captions:
            handle(policy, BadSampleError(json_path, f"{entry['filename']} has no non-empty caption",
                                          "fix or remove the entry", f"images[{i}]"), split_skipped)
            continue
        path = os.path.join(image_root, entry.get("filepath", ""), entry["filename"])
        record = CaptionRecord(path, captions, str(entry.get("cocoid", entry.get("imgid", entry["filename"]))))
        if check_image(json_path, f"images[{i}]", record, policy, split_skipped):
            splits[split].append(record)
    return splits
