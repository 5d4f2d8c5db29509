import json

import pytest
import torch

from apps.sentiment import SentimentTask, VaderAccuracy
from datamodules.sentiment import POLARITY, SentimentDataModule, collate_sentences, vader_analyzer
from decoders.classifier import RNNClassifier
from encoders.text import WordEmbeddingEncoder
from tests.conftest import CONFIGS, TINY_DATA, TINY_TRAINER, overfit, run_cli

CONFIG = str(CONFIGS / "sentiment.yaml")
TINY = [*TINY_DATA["sentiment.yaml"], "--model.warmup_steps", "0"]


def tiny_data(**kwargs):
    return SentimentDataModule(**{"num_train_sentences": 64, "num_val_sentences": 16, "num_test_sentences": 16,
                                  "batch_size": 16, **kwargs})


def tiny_task(dm, **kwargs):
    return SentimentTask(
        encoder=lambda vocab_size, features: WordEmbeddingEncoder(vocab_size, features, embed_dim=16),
        decoder=lambda in_dim, num_classes: RNNClassifier(in_dim, num_classes, hidden_dim=16, cell="gru",
                                                          bidirectional=True, pooling="attention"),
        vocab=dm.vocab, class_names=dm.class_names, **kwargs,
    )


def test_cli_fit_test_with_vader_baseline_and_predict(tmp_path, capsys):
    run_cli("fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path))
    best = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    hparams = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hparams["class_names"] == POLARITY and hparams["vocab"].split("\n")[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]

    metrics = {}
    for n in ("16", "40"):
        path = tmp_path / f"metrics{n}.json"
        run_cli("test", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.limit_test_batches", "1.0",
                "--data.num_test_sentences", n, "--ckpt_path", best, "--metrics_json", str(path),
                "--trainer.default_root_dir", str(tmp_path))
        metrics[n] = json.loads(path.read_text())
    assert {"test/acc", "test/f1", "test/acc_vader", "test/loss"} <= set(metrics["16"])
    # the baseline is VADER run on these very test sentences: another slice gives another value
    for n, values in metrics.items():
        sentences = SentimentDataModule(num_test_sentences=int(n)).sentences["test"]
        vader = sum((vader_analyzer().polarity_scores(s.text)["compound"] > 0) == (s.label == "positive")
                    for s in sentences) / len(sentences)
        assert values["test/acc_vader"] == pytest.approx(vader)
    assert metrics["16"]["test/acc_vader"] != metrics["40"]["test/acc_vader"]

    text = tmp_path / "sentences.txt"
    text.write_text("A gorgeous, moving film.\nDull, lifeless and far too long.\nIt is a film.\n")
    out = tmp_path / "predictions.tsv"
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY, "--ckpt_path", best, "--data.predict_file", str(text),
            "--predictions", str(out), "--trainer.default_root_dir", str(tmp_path))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"predictions: 3 sentences written to {out}"  # where it wrote
    lines = out.read_text().splitlines()
    assert [line.split("\t")[2] for line in lines] == text.read_text().splitlines()
    for line in lines:
        label, prob, _ = line.split("\t")
        assert label in POLARITY and 0.5 <= float(prob) <= 1.0
    as_json = tmp_path / "predictions.json"
    run_cli("predict", "--config", CONFIG, *TINY_TRAINER, *TINY, "--ckpt_path", best, "--data.predict_file", str(text),
            "--predictions", str(as_json), "--trainer.default_root_dir", str(tmp_path))
    assert [r["line"] for r in json.loads(as_json.read_text())] == [1, 2, 3]


def test_reloaded_checkpoint_predicts_what_the_trained_model_did(tmp_path):
    from pytorch_lightning import LightningDataModule

    from apps.cli import RNNSuiteCLI
    from apps.core import SequenceTask

    cli = RNNSuiteCLI(SequenceTask, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=["fit", "--config", CONFIG, *TINY_TRAINER, *TINY, "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.global_step == 2
    trained = cli.model.eval()  # the model in memory after fit
    again = SentimentTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=True).eval()
    assert again is not trained and again.vocab.tokens == trained.vocab.tokens
    batch = next(iter(cli.datamodule.test_dataloader()))
    with torch.no_grad():
        assert torch.equal(again(batch.tokens, batch.lengths), trained(batch.tokens, batch.lengths))


def test_padding_does_not_change_a_sentences_logits():
    torch.manual_seed(0)
    dm = tiny_data()
    task = tiny_task(dm).eval()
    short, long = dm.test_dataloader().dataset[0], dm.test_dataloader().dataset[1]
    if len(short[0]) > len(long[0]):
        short, long = long, short
    assert len(short[0]) < len(long[0])
    with torch.no_grad():
        alone = collate_sentences([short])
        both = collate_sentences([short, long])  # the short sentence padded to the long one's length
        assert both.tokens.shape[1] > alone.tokens.shape[1]
        torch.testing.assert_close(task(both.tokens, both.lengths)[0], task(alone.tokens, alone.lengths)[0],
                                   atol=1e-6, rtol=1e-5)


def test_overfitting_one_batch_drives_the_loss_down():
    torch.manual_seed(0)
    dm = tiny_data()
    task = tiny_task(dm)
    batch = next(iter(dm.train_dataloader()))
    losses = overfit(task, batch, steps=40, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0]


def test_lexicon_features_widen_the_encoder_and_can_be_turned_off():
    dm = tiny_data()
    with_lexicon, without = tiny_task(dm), tiny_task(dm, lexicon_features=False)
    assert with_lexicon.encoder.out_dim == without.encoder.out_dim + 2
    good = dm.vocabulary.index.get("good")
    assert good is not None and with_lexicon.encoder.word_features[good, 0] > 0


def test_vader_accuracy_metric():
    metric = VaderAccuracy()
    metric.update(["What a wonderful, moving film.", "Awful and boring.", "Awful and boring."], torch.tensor([1, 0, 1]))
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_misclassified_samples_are_the_wrong_ones():
    dm = tiny_data()
    task = tiny_task(dm)
    batch = next(iter(dm.val_dataloader()))
    logits = torch.zeros(len(batch.ids), 2)
    logits[torch.arange(len(batch.ids)), batch.labels] = 1.0
    logits[0] = logits[0].flip(0)  # only the first one is wrong
    rows = task.media_samples(batch, logits, limit=8)
    assert len(rows) == 1 and rows[0][0] == batch.ids[0] and rows[0][2] != rows[0][3]


def test_task_needs_vocab_and_classes():
    with pytest.raises(ValueError, match="needs a vocabulary: run it through the CLI"):
        SentimentTask(encoder=WordEmbeddingEncoder, decoder=RNNClassifier)
    with pytest.raises(ValueError, match="needs class names: run it through the CLI"):
        SentimentTask(encoder=WordEmbeddingEncoder, decoder=RNNClassifier, vocab="<pad>\n<bos>\n<eos>\n<unk>\ngood")
