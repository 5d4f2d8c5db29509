import json

import numpy as np
import pytest
import torch
from PIL import Image

from apps.captioning import CaptioningTask
from datamodules.captioning import CaptioningDataModule
from decoders.caption import CaptionDecoder
from decoders.search import beam_search, sample
from encoders import SmallCNNEncoder
from tests.conftest import CONFIGS, TINY_CAPTIONING, TINY_TRAINER, overfit, run_cli

CONFIG = str(CONFIGS / "captioning.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny fit through the real CLI; returns (root dir, printed output)."""
    root = tmp_path_factory.mktemp("captioning")
    return root


def fit(root, capsys, *extra):
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(root), *extra)
    return capsys.readouterr().out


def test_cli_fit_saves_best_and_last_and_prints_best(tmp_path, capsys):
    out = fit(tmp_path, capsys, "--trainer.max_epochs", "2")
    lines = out.strip().splitlines()
    assert lines[-1].startswith("best checkpoint: ")
    best = lines[-1].removeprefix("best checkpoint: ")
    assert best.startswith(str(tmp_path / "checkpoints" / "best-"))
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    ckpt = torch.load(best, weights_only=True)  # no pickled objects: safe to load
    assert ckpt["hyper_parameters"]["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert "val/bleu4" in str(ckpt["callbacks"])


def test_cli_test_writes_metrics_json_and_predict_writes_captions(tmp_path, capsys):
    fit(tmp_path, capsys)
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", ckpt, "--metrics_json", str(metrics_path))
    metrics = json.loads(metrics_path.read_text())
    assert {"test/bleu1", "test/bleu2", "test/bleu3", "test/bleu4", "test/loss"} <= set(metrics)
    assert all(0.0 <= metrics[f"test/bleu{n}"] <= 1.0 for n in range(1, 5))

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "captions.json"
    # A different training-set size would give a different vocabulary: the checkpoint's must win.
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--data.num_train_scenes", "4",
            "--ckpt_path", ckpt, "--data.predict_dir", str(images), "--predictions", str(out))
    captions = json.loads(out.read_text())
    assert set(captions) == {"a.png", "b.jpg"}
    assert "trained on generated scenes of coloured shapes" in capsys.readouterr().out  # the domain is told
    assert all(isinstance(c, str) for c in captions.values())


def test_overfitting_one_batch_drives_the_loss_down():
    torch.manual_seed(0)
    dm = CaptioningDataModule(num_train_scenes=16, num_val_scenes=2, num_test_scenes=2, batch_size=8)
    task = CaptioningTask(
        encoder=SmallCNNEncoder(channels=[8, 16]),
        decoder=lambda in_dim, vocab_size: CaptionDecoder(in_dim, vocab_size, embed_dim=16, hidden_dim=32),
        vocab=dm.vocab,
        lr=3e-3,
    )
    batch = next(iter(dm.val_dataloader()))
    losses = overfit(task, batch, steps=60, lr=3e-3)
    assert losses[-1] < 0.25 * losses[0]


def test_config_of_another_task_is_refused(tmp_path, capsys):
    fit(tmp_path, capsys)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "apps.somewhere.OtherTask"
    forged = tmp_path / "other.ckpt"
    torch.save(ckpt, forged)
    with pytest.raises(ValueError, match="is a apps.somewhere.OtherTask checkpoint"):
        run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", str(forged))


def tiny_task(**kwargs):
    dm = CaptioningDataModule(num_train_scenes=16, num_val_scenes=4, num_test_scenes=4, batch_size=4)
    spatial = kwargs.pop("spatial", False)
    decoder = kwargs.pop("decoder", lambda in_dim, vocab_size: CaptionDecoder(in_dim, vocab_size, embed_dim=16, hidden_dim=32))
    task = CaptioningTask(encoder=SmallCNNEncoder(channels=[8, 16], spatial=spatial), decoder=decoder, vocab=dm.vocab, **kwargs)
    return task, next(iter(dm.val_dataloader()))


@pytest.mark.parametrize("decoding", ["greedy", "beam", "sample"])
def test_configured_decoding_is_used(decoding):
    torch.manual_seed(0)
    task, batch = tiny_task(decoding=decoding, beam_size=2)
    task.eval()
    out = task(batch.images)
    assert out.tokens.shape == (4, task.max_caption_len)
    encoded = task.encoder(batch.images)
    args = (task.decoder, encoded, task.vocab.bos_id, task.vocab.eos_id, task.max_caption_len)
    if decoding == "beam":
        assert torch.equal(out.tokens, beam_search(*args, beam_size=2).tokens)
    elif decoding == "greedy":
        assert torch.equal(out.tokens, sample(*args).tokens)


def test_scheduled_sampling_probability_follows_training_progress(monkeypatch):
    task, batch = tiny_task(scheduled_sampling="linear", sampling_max_prob=0.5, sampling_start=0.0, sampling_end=1.0)
    monkeypatch.setattr(task, "training_progress", lambda **kw: 0.5)
    seen, forward = [], task.decoder.forward
    monkeypatch.setattr(task.decoder, "forward", lambda *a, sample_prob, **k: seen.append(sample_prob) or forward(*a, sample_prob=sample_prob, **k))
    task.compute_loss(batch, "train")
    task.compute_loss(batch, "val")
    assert seen == [pytest.approx(0.25), 0.0]  # evaluation never mixes in ground truth decisions


def test_attention_decoder_regularisation_and_maps(tmp_path):
    from decoders.caption import ShowAttendTellDecoder

    torch.manual_seed(0)
    task, batch = tiny_task(spatial=True, attention_regularization=1.0,
                            decoder=lambda d, v: ShowAttendTellDecoder(d, v, embed_dim=8, hidden_dim=16, attn_dim=8))
    with_penalty, _ = task.compute_loss(batch, "train")
    task.attention_regularization = 0.0
    without, _ = task.compute_loss(batch, "train")
    assert with_penalty > without
    task.eval()
    records = task.predict_step(batch._replace(ids=[f"img{i}.png" for i in range(4)]), 0)
    assert records[0]["attention"] is not None and records[0]["attention"].ndim == 3
    summary = CaptioningTask.write_predictions([records], str(tmp_path / "out.json"))
    assert "attention maps" in summary and len(list((tmp_path / "out_attention").glob("*.png"))) == 4


def test_frozen_encoder_gets_no_gradient_and_own_lr_group():
    task, batch = tiny_task(freeze_encoder=True)
    loss, _ = task.compute_loss(batch, "train")
    loss.backward()
    assert all(p.grad is None for p in task.encoder.parameters())
    assert len(task.param_groups()) == 1
    task, _ = tiny_task(encoder_lr=1e-5, lr=1e-3)
    groups = task.param_groups()
    assert len(groups) == 2 and groups[1]["lr"] == 1e-5


def test_command_line_model_options_override_the_checkpoint(tmp_path, capsys):
    fit(tmp_path, capsys)
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    from apps import cli

    seen = {}
    original = cli.RNNSuiteCLI.after_test
    cli.RNNSuiteCLI.after_test = lambda self: seen.update(decoding=self.model.decoding, beam=self.model.beam_size)
    try:
        run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", ckpt,
                "--model.decoding", "beam", "--model.beam_size=4")
    finally:
        cli.RNNSuiteCLI.after_test = original
    assert seen == {"decoding": "beam", "beam": 4}


def test_exported_checkpoint_is_small_and_predicts_the_same(tmp_path, capsys):
    from apps.export import export

    fit(tmp_path, capsys)
    full, slim = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "slim.ckpt"
    export(str(full), str(slim))
    assert slim.stat().st_size < 0.6 * full.stat().st_size  # optimizer moments dropped
    assert "optimizer_states" not in torch.load(slim, weights_only=True)
    images = next(iter(CaptioningDataModule(num_train_scenes=8, num_val_scenes=4, num_test_scenes=4).val_dataloader())).images
    a = CaptioningTask.load_from_checkpoint(full, weights_only=True).eval()
    b = CaptioningTask.load_from_checkpoint(slim, weights_only=True).eval()
    assert torch.equal(a(images).tokens, b(images).tokens)


def test_batch_transfer_moves_tensor_fields_and_keeps_metadata():
    from apps.core import SequenceTask
    from datamodules.captioning import CaptionBatch

    references = [[["a", "red", "square"]], [["a", "blue", "circle"]]]
    batch = CaptionBatch(torch.zeros(2, 3, 8, 8), torch.ones(2, 5, dtype=torch.long), references, ["x", "y"], ("bad.jpg",))
    moved = SequenceTask().transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert type(moved) is CaptionBatch
    assert moved.images.device.type == "meta" and moved.tokens.device.type == "meta"
    assert moved.references is references and moved.ids == ["x", "y"] and moved.skipped == ("bad.jpg",)


UPDOWN_CONFIG = str(CONFIGS / "captioning_updown.yaml")


def test_up_down_overfits_one_batch():
    from decoders.caption import UpDownDecoder

    torch.manual_seed(0)
    task, batch = tiny_task(spatial=True, lr=3e-3, attention_regularization=0.0,  # as configs/captioning_updown.yaml
                            decoder=lambda d, v: UpDownDecoder(d, v, embed_dim=16, hidden_dim=32, attn_dim=16))
    losses = overfit(task, batch, steps=120, lr=3e-3)  # two RNNs in series start slower than one
    assert losses[-1] < 0.25 * losses[0]


def test_cli_up_down_fits_with_scheduled_sampling_and_tests_with_beam_search(tmp_path, capsys):
    run_cli("fit", "--config", UPDOWN_CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.default_root_dir", str(tmp_path),
            "--model.scheduled_sampling", "linear", "--model.sampling_start", "0.0", "--model.sampling_max_prob", "0.5")
    best = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    assert torch.load(best, weights_only=True)["hyper_parameters"]["decoder"]["class_path"] == "decoders.UpDownDecoder"
    metrics = tmp_path / "m.json"
    run_cli("test", "--config", UPDOWN_CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", best,
            "--model.decoding", "beam", "--metrics_json", str(metrics))
    assert {"test/bleu4", "test/cider"} <= set(json.loads(metrics.read_text()))
