import re
import json
import wave

import numpy as np
import pytest
import torch

from datamodules.synthetic.espeak import Synthesizer, clean_phoneme
from datamodules.phonemes import LengthBucketSampler, PhonemeCollate, PhonemeDataModule, PhonemeSample
from datamodules.synthetic.speech_corpus import english_sentences
from datamodules.readers.speech import TIMIT_61_TO_39, fold, read_audio, read_manifest, read_timit, text_to_phonemes


def write_riff(path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


def write_sphere(path, samples: np.ndarray, rate: int, big_endian: bool = False) -> None:
    fields = [
        "NIST_1A", "   1024", "database_id -s5 TIMIT", f"sample_count -i {len(samples)}", f"sample_rate -i {rate}",
        "channel_count -i 1", f"sample_byte_format -s2 {'10' if big_endian else '01'}", "sample_n_bytes -i 2",
        "sample_sig_bits -i 16", "end_head",
    ]
    header = "\n".join(fields).encode() + b"\n"
    with open(path, "wb") as f:
        f.write(header.ljust(1024, b" "))
        f.write(samples.astype(">i2" if big_endian else "<i2").tobytes())


def tone(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16)


# --- audio -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("big_endian", [False, True])
def test_sphere_reader_reads_the_exact_samples(tmp_path, big_endian):
    samples = tone(1000)
    write_sphere(tmp_path / "a.wav", samples, 16000, big_endian)
    audio = read_audio(str(tmp_path / "a.wav"), 16000)
    np.testing.assert_allclose(audio.numpy(), samples / 32768.0, atol=1e-6)


def test_riff_reader_resamples_other_rates(tmp_path):
    samples = tone(8000)  # 1 s at 8 kHz
    write_riff(tmp_path / "a.wav", samples, 8000)
    audio = read_audio(str(tmp_path / "a.wav"), 16000)
    assert audio.dtype == torch.float32 and audio.shape == (16000,)
    same_rate = read_audio(str(tmp_path / "a.wav"), 8000)
    np.testing.assert_allclose(same_rate.numpy(), samples / 32768.0, atol=1e-6)


# --- manifests ----------------------------------------------------------------------------------------
def test_manifest_with_phonemes_and_with_text(tmp_path):
    (tmp_path / "clips").mkdir()
    write_riff(tmp_path / "clips" / "one.wav", tone(1600), 16000)
    lines = [
        {"audio": "clips/one.wav", "phonemes": "hh ah l ow"},
        {"audio": str(tmp_path / "clips" / "one.wav"), "text": "Hello, world!", "id": "second"},
    ]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_manifest(str(manifest))
    assert records[0].audio_path == str(tmp_path / "clips" / "one.wav")  # relative to the manifest's folder
    assert records[0].phonemes == ["hh", "ah", "l", "ow"] and records[0].utt_id == "one"
    # CMU dictionary, first pronunciation, stress digits stripped
    assert records[1].phonemes == ["hh", "ah", "l", "ow", "w", "er", "l", "d"] and records[1].utt_id == "second"


def test_manifest_words_missing_from_the_dictionary(tmp_path):
    write_riff(tmp_path / "a.wav", tone(1600), 16000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "hello qzxvvbw"}) + "\n"
                        + json.dumps({"audio": "a.wav", "text": "hello"}) + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl:1: words not in the CMU dictionary: qzxvvbw"):
        read_manifest(str(manifest))
    skipped = []
    records = read_manifest(str(manifest), skip_oov=True, skipped=skipped)
    assert len(skipped) == 1 and "m.jsonl:1 (words not in the CMU dictionary" in skipped[0] and len(records) == 1


def test_manifest_datamodule_builds_inventory_and_batches(tmp_path):
    for i, rate in enumerate([16000, 22050]):
        write_riff(tmp_path / f"u{i}.wav", tone(rate // 2, i), rate)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"audio": "u0.wav", "phonemes": "b a"}) + "\n"
                        + json.dumps({"audio": "u1.wav", "phonemes": "a c a"}) + "\n")
    dm = PhonemeDataModule(train_manifest=str(manifest), val_manifest=str(manifest), batch_size=2)
    assert dm.phonemes == ["a", "b", "c"] and dm.phoneme_folding is None
    batch = next(iter(dm.val_dataloader()))
    assert batch.audio.shape == (2, 8000)  # both resampled to 16 kHz, half a second each
    assert batch.targets.tolist() == [[2, 1, 0], [1, 3, 1]] and batch.target_lengths.tolist() == [2, 3]
    with pytest.raises(ValueError, match="test_manifest"):
        dm.test_dataloader()


# --- TIMIT --------------------------------------------------------------------------------------------
def make_timit(root):
    utts = {
        ("TRAIN", "DR1", "FCJF0", "SI1027"): [(0, 2000, "h#"), (2000, 3000, "bcl"), (3000, 3500, "b"), (3500, 5000, "ix"),
                                               (5000, 5600, "q"), (5600, 7000, "zh"), (7000, 8000, "h#")],
        ("TRAIN", "DR1", "FCJF0", "SA1"): [(0, 8000, "h#")],  # SA sentences are excluded
        ("TEST", "DR1", "MDAB0", "SX139"): [(0, 4000, "h#"), (4000, 8000, "ao")],  # a core test speaker
        ("TEST", "DR2", "FAKS0", "SI943"): [(0, 4000, "h#"), (4000, 8000, "el")],  # another TEST speaker: val
    }
    for i, (parts, phones) in enumerate(utts.items()):
        folder = root.joinpath(*parts[:3])
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            write_riff(folder / f"{parts[3]}.WAV", tone(8000, i), 16000)
        else:
            write_sphere(folder / f"{parts[3]}.WAV", tone(8000, i), 16000)
        (folder / f"{parts[3]}.PHN").write_text("".join(f"{a} {b} {p}\n" for a, b, p in phones))


def test_timit_reader_layout_splits_and_sa_exclusion(tmp_path):
    make_timit(tmp_path)
    splits = read_timit(str(tmp_path))
    assert [r.utt_id for r in splits["train"]] == ["FCJF0_SI1027"]
    assert [r.utt_id for r in splits["test"]] == ["MDAB0_SX139"]
    assert [r.utt_id for r in splits["val"]] == ["FAKS0_SI943"]
    assert splits["train"][0].phonemes == ["h#", "bcl", "b", "ix", "q", "zh", "h#"]


def test_timit_61_to_39_folding():
    assert fold(["h#", "bcl", "b", "ix", "q", "zh", "ao", "el", "axr", "h#"], TIMIT_61_TO_39) == [
        "sil", "sil", "b", "ih", "sh", "aa", "l", "er", "sil"]
    assert len(set(TIMIT_61_TO_39)) == 61 and len(set(TIMIT_61_TO_39.values()) - {""}) == 39


def test_timit_datamodule_reads_both_wav_kinds_and_folds_for_scoring(tmp_path):
    make_timit(tmp_path)
    dm = PhonemeDataModule(timit_root=str(tmp_path), batch_size=4)
    assert dm.phonemes == sorted({"h#", "bcl", "b", "ix", "q", "zh"})
    assert dm.phoneme_folding == TIMIT_61_TO_39
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio.shape == (1, 8000) and batch.ids == ["FCJF0_SI1027"]
    val = next(iter(dm.val_dataloader()))  # RIFF .WAV; "el" is not in the training inventory: kept as a reference only
    assert val.phonemes == [["h#", "el"]] and val.target_lengths.tolist() == [1]


def test_missing_timit_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TRAIN/"):
        read_timit(str(tmp_path))


def test_text_to_phonemes_strips_stress():
    assert text_to_phonemes("Speech") == ["s", "p", "iy", "ch"]


# --- the generated espeak corpus ----------------------------------------------------------------------
def test_espeak_speaks_with_time_stamped_phonemes():
    utt = Synthesizer.get().speak("the cat sat", "en-us+f2", rate=170, pitch=60, sample_rate=16000)
    assert utt.sample_rate == 16000 and utt.audio.dtype == torch.float32 and 0.4 < utt.audio.shape[0] / 16000 < 3
    assert utt.phonemes[:3] == ["D", "@2", "k"]  # stress marks and pauses stripped
    assert not any(ch in p for p in utt.phonemes for ch in "',_%=;")
    assert utt.starts == sorted(utt.starts) and utt.starts[-1] < utt.audio.shape[0] / 16000
    with pytest.raises(ValueError, match="no voice"):
        Synthesizer.get().speak("hi", "xx-nonexistent")


def test_clean_phoneme():
    assert clean_phoneme("'aI") == "aI" and clean_phoneme(",oU") == "oU"
    assert clean_phoneme("_:") is None and clean_phoneme(";") is None and clean_phoneme("@") == "@"


def test_sentences_ship_with_python():
    sentences = english_sentences()
    assert len(sentences) > 500
    assert all(3 <= len(s.split()) <= 14 for s in sentences)


def test_generated_corpus_is_speaker_and_sentence_disjoint_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSUITE_CACHE", str(tmp_path))
    args = dict(num_train_utterances=12, num_val_utterances=4, num_test_utterances=4, batch_size=4)
    dm = PhonemeDataModule(**args)
    gen = dm.corpus
    speakers = {s: {it["speaker"].split("+")[-1] if "+" in it["speaker"] else "" for it in gen[s]} for s in gen}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["val"]
    assert speakers["test"] <= {"m7", "f5"} and speakers["val"] <= {"m6", "f4"}
    texts = {s: {it["text"] for it in gen[s]} for s in gen}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"] and not texts["val"] & texts["test"]
    assert len(list((tmp_path / "phonemes").glob("espeak-*.pt"))) == 3  # a file per split
    again = PhonemeDataModule(**args)  # from the cache: identical
    assert torch.equal(again.corpus["test"][0]["audio"], gen["test"][0]["audio"]) and again.phonemes == dm.phonemes
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio.shape[0] == 4 and batch.targets.shape[0] == 4
    assert all(n > 0 for n in batch.target_lengths.tolist())
    with pytest.raises(ValueError, match="disjoint"):
        PhonemeDataModule(**args, val_variants=["m1"])


def test_evaluation_speaks_only_the_split_it_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSUITE_CACHE", str(tmp_path))
    args = dict(num_train_utterances=12, num_val_utterances=4, num_test_utterances=4, batch_size=4)
    dm = PhonemeDataModule(**args, phonemes=["a", "b"])  # the inventory from a checkpoint: no training labels needed
    str(dm)  # what jsonargparse formats into its messages (Lightning's __str__ would build every dataloader)
    assert not list(tmp_path.rglob("espeak-*.pt"))
    test = list(dm.test_dataloader())
    assert sum(len(b.ids) if hasattr(b, "ids") else b.audio.shape[0] for b in test) == 4
    assert [p.name.rsplit("-", 1)[1] for p in tmp_path.rglob("espeak-*.pt")] == ["test.pt"]
    monkeypatch.setenv("RNNSUITE_CACHE", str(tmp_path / "other"))
    full = PhonemeDataModule(**args)  # all splits spoken together, from scratch: the same test utterances
    assert [u["text"] for u in full.corpus["test"]] == [u["text"] for u in dm.corpus_split("test")]


def test_collate_pads_and_bucket_sampler_covers_everything():
    collate = PhonemeCollate(["a", "b"])
    batch = collate([PhonemeSample(torch.ones(5), ["a", "b", "x"], "u1"), PhonemeSample(torch.ones(3), ["b"], "u2")])
    assert batch.audio.shape == (2, 5) and batch.audio[1, 3:].eq(0).all()
    assert batch.audio_lengths.tolist() == [5, 3] and batch.targets.tolist() == [[1, 2], [2, 0]]
    assert batch.phonemes == [["a", "b", "x"], ["b"]]  # the unknown "x" still counts against a prediction
    sampler = LengthBucketSampler(list(range(10, 0, -1)), batch_size=3, shuffle=True)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10)) and len(batches) == len(sampler) == 4


def test_given_inventory_means_nothing_is_generated_until_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSUITE_CACHE", str(tmp_path))
    dm = PhonemeDataModule(num_train_utterances=4, num_val_utterances=2, num_test_utterances=2, phonemes=["a", "b"])
    assert dm.phonemes == ["a", "b"] and not (tmp_path / "phonemes").exists()  # predict with a checkpoint stays cheap
    next(iter(dm.val_dataloader()))
    assert len(list((tmp_path / "phonemes").glob("espeak-*.pt"))) == 1


def test_phoneme_legend_gives_ipa_and_an_example_and_the_readme_table_is_current():
    from datamodules.synthetic.speech_corpus import phoneme_legend
    from tests.conftest import CONFIGS

    legend = phoneme_legend()
    assert legend["T"] == ("θ", legend["T"][1]) and legend["S"][0] == "ʃ" and legend["N"][0] == "ŋ"
    assert legend["tS"][0] == "tʃ" and legend["aI"][0] == "aɪ" and legend["D"][0] == "ð"
    for label, (ipa, word) in legend.items():
        assert ipa and word.isalpha()
    # espeak's transcriber corrupts the next synthesis ("the cat" spoken as "cat"): it never runs in this process
    assert Synthesizer.get().speak("the cat sat", "en-us").phonemes[:2] == ["D", "@2"]
    readme = (CONFIGS.parent / "README.md").read_text()
    cells = re.findall(r"`([^`]+)` \| (\S+) \((\w+)\)", "\n".join(l for l in readme.splitlines() if l.startswith("| `")))
    table = {sym: (ipa, word) for sym, ipa, word in cells}
    assert len(table) == 64 and all(legend[s] == v for s, v in table.items()), "regenerate the README's phoneme table"
