import json
import wave

import pytest
import torch
import torchaudio.functional as AF

from apps.phonemes import PhonemeTask
from datamodules.synthetic.espeak import Synthesizer
from datamodules.phonemes import PhonemeBatch, PhonemeDataModule
from decoders.ctc import CTCDecoder
from encoders.audio import LogMelEncoder
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, overfit, run_cli

CONFIG = str(CONFIGS / "phonemes.yaml")
TINY_PHONEMES = [
    *TINY_DATA["phonemes.yaml"],
    "--model.encoder.n_mels", "20",
    "--model.encoder.channels", "[4, 4]",
    "--model.encoder.out_dim", "16",
    "--model.decoder.hidden_dim", "16",
    "--model.decoder.num_layers", "1",
    "--model.warmup_steps", "0",
    "--model.beam_width", "2",
]


def tiny_task(phonemes, **kwargs) -> PhonemeTask:
    return PhonemeTask(
        encoder=LogMelEncoder(n_mels=20, channels=[8, 8], out_dim=32, dropout=0.0),
        decoder=lambda in_dim, n: CTCDecoder(in_dim, n, hidden_dim=32, num_layers=1, dropout=0.0),
        phonemes=phonemes,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny fit through the real CLI, shared by the tests that need a checkpoint; returns (root, best ckpt)."""
    root = tmp_path_factory.mktemp("phonemes")
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY_PHONEMES, "--trainer.default_root_dir", str(root))
    best = [p for p in (root / "checkpoints").glob("best-*.ckpt")]
    assert len(best) == 1 and (root / "checkpoints" / "last.ckpt").exists()
    return root, str(best[0])


def write_wav(path, audio: torch.Tensor, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((audio.clamp(-1, 1) * 32767).numpy().astype("<i2").tobytes())


def test_cli_fit_test_and_predict_with_time_stamps(trained, tmp_path):
    _, best = trained
    ckpt = torch.load(best, weights_only=True)
    assert "val/per" in str(ckpt["callbacks"]) and ckpt["hyper_parameters"]["phonemes"]

    metrics_path = tmp_path / "metrics.json"
    run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY_PHONEMES, "--ckpt_path", best, "--metrics_json", str(metrics_path))
    metrics = json.loads(metrics_path.read_text())
    assert {"test/per", "test/per_greedy", "test/loss"} <= set(metrics)
    # recomputed by hand on the (one) test batch: edit distance over reference length, beam 2 and greedy
    model = PhonemeTask.load_from_checkpoint(best, weights_only=True).eval()
    batch = next(iter(PhonemeDataModule(num_train_utterances=16, num_val_utterances=4, num_test_utterances=4,
                                        batch_size=4).test_dataloader()))
    with torch.no_grad():
        for key, width in (("test/per", 2), ("test/per_greedy", 1)):
            hyps = model.transcribe(batch.audio, batch.audio_lengths, beam_width=width)
            errors = sum(AF.edit_distance(ref, hyp) for ref, hyp in zip(batch.phonemes, hyps))
            assert metrics[key] == pytest.approx(errors / sum(map(len, batch.phonemes))), key

    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    utt = Synthesizer.get().speak("a cat", "en-us", sample_rate=22050)
    write_wav(audio_dir / "cat.wav", utt.audio, 22050)  # another rate: resampled on reading
    (audio_dir / "notes.txt").write_text("not audio")
    out_path = tmp_path / "phonemes.json"
    # A different training-set size gives a different inventory: the checkpoint's must win.
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY_PHONEMES, "--data.num_train_utterances", "2",
            "--ckpt_path", best, "--data.predict_dir", str(audio_dir), "--predictions", str(out_path))
    result = json.loads(out_path.read_text())
    assert set(result) == {"cat.wav"}
    phonemes, segments = result["cat.wav"]["phonemes"].split(), result["cat.wav"]["segments"]
    assert [s["phoneme"] for s in segments] == phonemes
    from datamodules.synthetic.speech_corpus import phoneme_legend  # espeak's inventory: IPA beside the mnemonics

    assert result["cat.wav"]["ipa"].split() == [phoneme_legend()[p][0] for p in phonemes]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(0 <= s["start"] <= s["end"] <= 1.5 for s in segments)


def test_padded_utterance_scores_like_the_unpadded_one():
    torch.manual_seed(0)
    dm = PhonemeDataModule(num_train_utterances=16, num_val_utterances=4, num_test_utterances=4, batch_size=4)
    task = tiny_task(dm.phonemes).eval()
    batch = next(iter(dm.val_dataloader()))
    i = int(batch.audio_lengths.argmin())
    n = int(batch.audio_lengths[i])
    assert n < batch.audio.shape[1]  # really padded
    alone = PhonemeBatch(batch.audio[i : i + 1, :n], batch.audio_lengths[i : i + 1], batch.targets[i : i + 1],
                         batch.target_lengths[i : i + 1], batch.phonemes[i : i + 1], batch.ids[i : i + 1])
    with torch.no_grad():
        lp_batch, steps_batch = task(batch.audio, batch.audio_lengths)
        lp_alone, steps_alone = task(alone.audio, alone.audio_lengths)
        assert steps_batch[i] == steps_alone[0]
        torch.testing.assert_close(lp_batch[i, : steps_alone[0]], lp_alone[0], atol=1e-5, rtol=1e-4)
        for b in (batch, alone):
            outputs = task(b.audio, b.audio_lengths)
            task.metrics["test"].update(**task.metric_inputs(b, outputs, "test"))
    # loss of the utterance alone == its share of the batch loss (CTCLoss reduction="none" semantics)
    task.ctc.reduction = "none"
    with torch.no_grad():
        full = task.ctc(lp_batch.transpose(0, 1), batch.targets, steps_batch, batch.target_lengths)
        one = task.ctc(lp_alone.transpose(0, 1), alone.targets[:, : alone.target_lengths[0]], steps_alone, alone.target_lengths)
    torch.testing.assert_close(full[i], one[0], atol=1e-4, rtol=1e-4)
    task.ctc.reduction = "mean"
    task.metrics["test"].reset()
    with torch.no_grad():
        task.metrics["test"].update(**task.metric_inputs(alone, task(alone.audio, alone.audio_lengths), "test"))
        per_alone = float(task.metrics["test"].compute()["per"])
        task.metrics["test"].reset()
        only_i = PhonemeBatch(*[x[i : i + 1] if isinstance(x, torch.Tensor) else x[i : i + 1] for x in batch])
        lp, steps = task(batch.audio, batch.audio_lengths)
        task.metrics["test"].update(**task.metric_inputs(only_i, (lp[i : i + 1], steps[i : i + 1]), "test"))
        assert float(task.metrics["test"].compute()["per"]) == pytest.approx(per_alone)


def test_overfitting_one_batch_drives_the_loss_down():
    torch.manual_seed(0)
    dm = PhonemeDataModule(num_train_utterances=16, num_val_utterances=4, num_test_utterances=4, batch_size=2)
    task = tiny_task(dm.phonemes)
    batch = next(iter(dm.val_dataloader()))  # evaluation batches come shortest first: the two shortest utterances
    task.encoder.freq_masks = task.encoder.time_masks = 0
    losses = overfit(task, batch, steps=40, lr=1e-2)
    assert losses[-1] < 0.6 * losses[0]


def test_per_folds_timit_phones_before_scoring():
    from datamodules.readers.speech import TIMIT_61_TO_39

    task = tiny_task(["aa", "ao", "b", "bcl", "h#", "q"], phoneme_folding=TIMIT_61_TO_39)
    assert task.scored([["h#", "ao", "q", "bcl", "b"]]) == ["sil aa sil b"]  # q dropped, closure + h# -> sil
    task.metrics["val"].update(task.scored([["h#", "aa", "b"]]), task.scored([["h#", "ao", "q", "bcl", "b"]]))
    # folded: "sil aa b" vs "sil aa sil b" -> one deletion over four reference phones
    assert float(task.metrics["val"].compute()["per"]) == pytest.approx(0.25)


def test_task_without_inventory_is_refused():
    with pytest.raises(ValueError, match="phoneme inventory"):
        tiny_task(None)
