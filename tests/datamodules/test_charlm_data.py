"""Character LM data: the stream layout that lets state carry across batches, splits by play, the alphabet and
its unknown symbol, bad text files."""
from __future__ import annotations

import random

import pytest

from datamodules.bad_samples import BadSampleError
from datamodules.charlm import TEST_WORKS, UNK, VAL_WORKS, CharLMDataModule, strip_gutenberg
from tests.conftest import CONFIGS, TINY_TRAINER, run_cli


def write_text(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


def random_text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefgh ij\n") for _ in range(n))


def decode(dm: CharLMDataModule, ids) -> str:
    return "".join(dm.alphabet[i] for i in ids.tolist())


def test_row_i_of_batch_n_plus_1_continues_row_i_of_batch_n(tmp_path):
    text = random_text(1000)
    dm = CharLMDataModule(train_file=write_text(tmp_path / "t.txt", text), batch_size=3, bptt=7)
    batches = list(dm.train_dataloader())
    S = (len(text) - 1) // 3  # 333 characters per stream: 48 windows, the last of 4
    assert len(batches) == len(dm.train_dataloader()) == 48 and batches[-1].inputs.shape == (3, 4)
    assert [b.start for b in batches] == [True] + [False] * 47  # a new pass over the data resets the state
    for n in range(len(batches) - 1):
        # the next window's first input is this window's last target, row by row
        assert batches[n + 1].inputs[:, 0].tolist() == batches[n].targets[:, -1].tolist()
    for i in range(3):  # row i read across the batches is the i-th contiguous piece of the text
        row = "".join(decode(dm, b.inputs[i]) for b in batches)
        assert row == text[i * S:(i + 1) * S]
        assert "".join(decode(dm, b.targets[i]) for b in batches) == text[i * S + 1:(i + 1) * S + 1]
    assert batches[2].ids == [f"train:{o + 14}" for o in (0, S, 2 * S)]


def test_evaluation_splits_are_whole_plays_never_in_training():
    dm = CharLMDataModule()
    train, val, test = dm.text("train"), dm.text("val"), dm.text("test")
    assert len(train) > 4_000_000 and 150_000 < len(val) < 400_000 and 150_000 < len(test) < 400_000
    for held_out in (val, test):
        # long lines of the held-out plays (their speeches) do not occur in the training text
        lines = [line for line in held_out.splitlines() if len(line) > 50]
        assert len(lines) > 500
        assert sum(line in train for line in random.Random(0).sample(lines, 200)) <= 2  # a stock phrase at most
    assert "Thane of Cawdor" in test and "Thane of Cawdor" not in train and "Malvolio" in val
    assert set(VAL_WORKS).isdisjoint(TEST_WORKS)
    assert dm.alphabet[0] == UNK and set(dm.alphabet[1:]) == set(train)


def test_gutenberg_boilerplate_is_stripped():
    text = ("The Project Gutenberg EBook of Hamlet\nlicence text\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
            "\nHAMLET.\nTo be, or not to be\n\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n")
    assert strip_gutenberg(text) == "HAMLET.\nTo be, or not to be\n"
    assert strip_gutenberg("no header here\n") == "no header here\n"


def test_characters_outside_the_training_alphabet_are_counted_as_unknown(tmp_path):
    dm = CharLMDataModule(train_file=write_text(tmp_path / "t.txt", random_text(500)),
                          val_file=write_text(tmp_path / "v.txt", "abc é€ de é\n" * 20), batch_size=2, bptt=8)
    with pytest.warns(UserWarning, match=r"v\.txt: 60 characters outside the training alphabet \('é' x40, '€' x20\)"):
        batch = next(iter(dm.val_dataloader()))
    assert dm.unknown[str(tmp_path / "v.txt")] == {"é": 40, "€": 20}
    assert decode(dm, batch.inputs[0]) == f"abc {UNK}{UNK} d"


@pytest.mark.parametrize("content, parts", [
    (b"", ["empty"]),
    (b"\n \n", ["empty"]),
    (b"first line\nsecond \xe9t\xe9 line\n", ["not UTF-8", "byte 0xe9 at byte offset 18", ":2:"]),
])
def test_bad_text_files_are_errors_naming_the_file(tmp_path, content, parts):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    dm = CharLMDataModule(train_file=str(path))
    with pytest.raises(BadSampleError) as info:
        dm.alphabet
    for part in [str(path), *parts]:
        assert part in str(info.value)
    with pytest.raises(BadSampleError, match="no such text file"):
        CharLMDataModule(test_file=str(tmp_path / "missing.txt"), alphabet=[UNK, "a"]).test_dataloader()


def test_the_command_line_prints_a_bad_file_in_one_line_without_traceback(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    path = tmp_path / "latin1.txt"
    path.write_bytes("Qu'il était beau\n".encode("latin-1"))
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "fit", "--config", str(CONFIGS / "charlm.yaml"),
                           "--trainer.logger", "false", "--data.train_file", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error: {path}:1: not UTF-8 text: byte 0xe9 at byte offset 6" in proc.stderr.strip().splitlines()[-1]


def test_too_short_a_text_for_the_streams_is_an_error(tmp_path):
    dm = CharLMDataModule(train_file=write_text(tmp_path / "t.txt", "abc"), batch_size=4)
    with pytest.raises(ValueError, match="too few for 4 streams; lower --data.batch_size"):
        dm.train_dataloader()


def test_under_ddp_each_process_takes_its_own_rows_of_every_window(tmp_path):
    from types import SimpleNamespace

    path = write_text(tmp_path / "t.txt", random_text(400))
    whole = list(CharLMDataModule(train_file=path, batch_size=4, bptt=10).train_dataloader())
    shares = []
    for rank in (0, 1):
        dm = CharLMDataModule(train_file=path, batch_size=4, bptt=10)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shares.append(list(dm.train_dataloader()))
    assert len(shares[0]) == len(shares[1]) == len(whole)  # every process steps through the same windows
    for n, batch in enumerate(whole):
        assert batch.inputs[0::2].tolist() == shares[0][n].inputs.tolist()  # rank 0: streams 0 and 2
        assert batch.inputs[1::2].tolist() == shares[1][n].inputs.tolist()  # rank 1: streams 1 and 3
