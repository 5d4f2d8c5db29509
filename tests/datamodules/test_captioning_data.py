import json

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.synthetic import scenes
from datamodules.captioning import CaptioningDataModule
from datamodules.readers.karpathy import read_karpathy_json


def test_scene_splits_are_disjoint_by_content():
    keys = {s: {sc.content_key() for sc in scenes.sample_split(s, 300, seed=0)} for s in scenes.SPLITS}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]


def test_scenes_are_seeded():
    a, b = scenes.sample_split("val", 5, seed=1), scenes.sample_split("val", 5, seed=1)
    assert a == b and np.array_equal(scenes.render(a[0]), scenes.render(b[0]))
    assert a != scenes.sample_split("val", 5, seed=2)


def test_captions_describe_the_rendered_relation():
    for scene in scenes.sample_split("train", 50, seed=0):
        refs = [" ".join(c) for c in scene.captions()]
        assert len(set(refs)) == len(refs) >= 3  # several different phrasings
        if scene.relation is None:
            continue
        first, second = scene.objects
        if scene.relation == "left":
            assert first.x < second.x and "to the right of" in refs[1]
        else:
            assert first.y < second.y and "below" in refs[1]
        # the first-mentioned object's colour is really drawn at its position
        pixel = scenes.render(scene)[int(first.y), int(first.x)].astype(int)
        assert np.abs(pixel - np.array(scenes.COLOURS[first.colour])).max() < 80


def write_karpathy_fixture(tmp_path):
    root = tmp_path / "images"
    (root / "train2014").mkdir(parents=True)
    (root / "val2014").mkdir()
    entries = []
    for i, (folder, split) in enumerate([("train2014", "train"), ("val2014", "restval"), ("val2014", "val"), ("val2014", "test")]):
        name = f"img{i}.jpg"
        Image.fromarray(np.full((40, 30, 3), 40 * i, np.uint8)).save(root / folder / name)
        entries.append({
            "filepath": folder, "filename": name, "split": split, "imgid": i,
            "sentences": [{"tokens": ["A", "dog", f"w{i}"]}, {"tokens": ["a", "cat"]}],
        })
    path = tmp_path / "dataset_test.json"
    path.write_text(json.dumps({"images": entries, "dataset": "test"}))
    return path, root


def test_karpathy_reader_counts_restval_as_train(tmp_path):
    path, root = write_karpathy_fixture(tmp_path)
    splits = read_karpathy_json(str(path), str(root))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert splits["train"][1].image_path == str(root / "val2014" / "img1.jpg")
    assert splits["val"][0].captions == [["a", "dog", "w2"], ["a", "cat"]]  # lower-cased tokens


def test_karpathy_datamodule_builds_vocab_and_batches(tmp_path):
    path, root = write_karpathy_fixture(tmp_path)
    dm = CaptioningDataModule(karpathy_json=str(path), image_root=str(root), image_size=32, batch_size=2)
    assert {"dog", "cat", "w0", "w1"} <= set(dm.vocab) and "w3" not in dm.vocab  # train + restval only
    batch = next(iter(dm.test_dataloader()))
    assert batch.images.shape == (1, 3, 32, 32)
    assert batch.tokens[0, 0] == dm.vocabulary.bos_id
    assert batch.references == [[["a", "dog", "w3"], ["a", "cat"]]]


def test_karpathy_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data.karpathy_json"):
        read_karpathy_json(str(tmp_path / "missing.json"), str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "train", "sentences": [{"tokens": []}]}]}))
    with pytest.raises(ValueError, match=r"bad.json images\[0\]: x.jpg has no non-empty caption"):
        read_karpathy_json(str(bad), str(tmp_path))
    path, root = write_karpathy_fixture(tmp_path)
    with pytest.raises(ValueError, match=r"images\[0\]: image not found: .*img0.jpg; check --data.image_root"):
        CaptioningDataModule(karpathy_json=str(path), image_root=str(tmp_path / "elsewhere"), batch_size=2)


def test_collate_pads_and_marks_caption_ends():
    dm = CaptioningDataModule(num_train_scenes=16, num_val_scenes=4, num_test_scenes=4, batch_size=4)
    batch = next(iter(dm.val_dataloader()))
    vocab = dm.vocabulary
    lengths = (batch.tokens != vocab.pad_id).sum(1)
    for row, n, refs in zip(batch.tokens, lengths, batch.references):
        assert row[n - 1] == vocab.eos_id and vocab.decode(row.tolist()) == refs[0]
    assert batch.images.dtype == torch.float32 and batch.images.shape[1:] == (3, 64, 64)


def test_vocab_argument_overrides_the_built_one():
    dm = CaptioningDataModule(num_train_scenes=8, num_val_scenes=2, num_test_scenes=2, vocab=["<pad>", "<bos>", "<eos>", "<unk>", "x"])
    assert dm.vocab == ["<pad>", "<bos>", "<eos>", "<unk>", "x"]


def write_coco_fixture(tmp_path, split, n):
    folder = tmp_path / f"{split}2014"
    folder.mkdir()
    images, annotations = [], []
    for i in range(n):
        name = f"COCO_{split}2014_{i:012d}.jpg"
        Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(folder / name)
        images.append({"id": 100 + i, "file_name": name})
        annotations += [{"image_id": 100 + i, "id": 2 * i, "caption": f"A man riding a Horse, number {i}."},
                        {"image_id": 100 + i, "id": 2 * i + 1, "caption": "  "}]  # blank captions are dropped
    path = tmp_path / f"captions_{split}2014.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path, folder


def test_coco_captions_format(tmp_path):
    from datamodules.readers.coco import read_coco_captions

    train_json, train_dir = write_coco_fixture(tmp_path, "train", 3)
    val_json, val_dir = write_coco_fixture(tmp_path, "val", 2)
    records = read_coco_captions(str(train_json), str(train_dir))
    assert [r.image_id for r in records] == ["100", "101", "102"]
    assert records[1].captions == [["a", "man", "riding", "a", "horse", "number", "1"]]
    dm = CaptioningDataModule(coco_train_json=str(train_json), coco_train_images=str(train_dir),
                              coco_val_json=str(val_json), coco_val_images=str(val_dir), image_size=16, batch_size=8)
    assert {"horse", "0", "1", "2"} <= set(dm.vocab)
    test_batch = next(iter(dm.test_dataloader()))  # test defaults to the val annotations
    assert test_batch.images.shape == (2, 3, 16, 16) and test_batch.ids == ["100", "101"]
    with pytest.raises(ValueError, match="coco_train_images"):
        CaptioningDataModule(coco_train_json=str(train_json), coco_val_json=str(val_json))
