"""Self-critical training: the loss's direction, both baselines, the task's SCST step, init_from, and the CLI."""
import json

import pytest
import torch

from apps.caption_metrics import CiderDScorer
from apps.captioning import CaptioningTask
from apps.scst import policy_gradient_loss, scst_baseline
from datamodules.captioning import CaptioningDataModule
from decoders.caption import CaptionDecoder
from decoders.search import sample, sample_with_log_probs
from encoders import Encoded, SmallCNNEncoder
from tests.conftest import CONFIGS, TINY_CAPTIONING, TINY_DATA, TINY_TRAINER, run_cli

SCST_CONFIG = str(CONFIGS / "captioning_scst.yaml")
XE_CONFIG = str(CONFIGS / "captioning.yaml")


def sequence_log_prob(decoder, encoded, tokens, lengths, bos=1, eos=2):
    """Teacher-forced log p of each generated caption (its <eos> included)."""
    targets = tokens.clone()
    ended = lengths < tokens.shape[1]
    targets[ended, lengths[ended]] = eos
    mask = torch.arange(tokens.shape[1])[None] <= lengths[:, None]
    inputs = torch.cat([torch.full((len(tokens), 1), bos), targets[:, :-1]], dim=1)
    logp = decoder(encoded, inputs).logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(-1)
    return (logp * mask).sum(1)


def test_policy_gradient_step_raises_the_better_sample_and_lowers_the_worse():
    torch.manual_seed(0)
    dec = CaptionDecoder(4, 9, embed_dim=5, hidden_dim=8)
    enc = Encoded(torch.randn(1, 1, 4), None)
    rollout = sample_with_log_probs(dec, enc, 1, 2, 6, samples_per_image=2, generator=torch.Generator().manual_seed(3))
    tokens, lengths = rollout.generated.tokens, rollout.generated.lengths
    assert not torch.equal(tokens[0], tokens[1]), "the seed should draw two different captions"
    repeated = Encoded(enc.seq.expand(2, -1, -1), None)
    before = sequence_log_prob(dec, repeated, tokens, lengths).detach()
    loss = policy_gradient_loss(rollout.log_probs, rollout.mask.float(), torch.tensor([1.0, -1.0]))
    assert loss.item() * rollout.mask.sum().item() == pytest.approx(
        -(rollout.log_probs[0].sum() - rollout.log_probs[1].sum()).item(), rel=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in dec.parameters():
            p -= 0.1 * p.grad
    after = sequence_log_prob(dec, repeated, tokens, lengths).detach()
    assert after[0] > before[0] and after[1] < before[1]


def test_zero_advantage_gives_no_gradient():
    torch.manual_seed(0)
    dec = CaptionDecoder(4, 9, embed_dim=5, hidden_dim=8)
    rollout = sample_with_log_probs(dec, Encoded(torch.randn(2, 1, 4), None), 1, 2, 6, samples_per_image=2)
    policy_gradient_loss(rollout.log_probs, rollout.mask.float(), torch.zeros(4)).backward()
    assert all(not p.grad.abs().sum() for p in dec.parameters() if p.grad is not None)


def test_baselines():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # mean: the other samples' mean, never the sample's own reward
    torch.testing.assert_close(scst_baseline(rewards, "mean"), torch.tensor([[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]))
    torch.testing.assert_close(scst_baseline(rewards, "greedy", torch.tensor([5.0, 7.0])),
                               torch.tensor([[5.0] * 3, [7.0] * 3]))
    with pytest.raises(ValueError, match="at least two samples"):
        scst_baseline(rewards[:, :1], "mean")
    with pytest.raises(ValueError, match="needs the greedy"):
        scst_baseline(rewards, "greedy")


def tiny_task(**kwargs):
    dm = CaptioningDataModule(num_train_scenes=16, num_val_scenes=4, num_test_scenes=4, batch_size=4)
    task = CaptioningTask(encoder=SmallCNNEncoder(channels=[8, 16]),
                          decoder=lambda d, v: CaptionDecoder(d, v, embed_dim=16, hidden_dim=32), vocab=dm.vocab, **kwargs)
    return task, dm


def test_greedy_baseline_is_the_greedy_captions_reward(monkeypatch):
    torch.manual_seed(0)
    task, dm = tiny_task(objective="scst", scst_samples=3, scst_baseline="greedy")
    task.cider_reward = CiderDScorer(dm.train_references)
    batch = next(iter(dm.val_dataloader()))
    logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    task.train()
    task.scst_loss(batch)
    task.decoder.eval()
    greedy = sample(task.decoder, task.encode(batch), task.vocab.bos_id, task.vocab.eos_id, task.max_caption_len)
    expected = task.reward(greedy, batch.references).mean().item()
    assert logged["train/baseline"] == pytest.approx(expected, rel=1e-5)
    assert {"train/reward", "train/entropy"} <= set(logged) and logged["train/entropy"] > 0


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_steps_raise_the_reward(baseline, monkeypatch):
    """With a reward that pays for short captions, SCST steps (through the task's own loss) shorten the greedy
    caption: the optimisation goes the reward's way with either baseline."""
    torch.manual_seed(0)
    task, dm = tiny_task(objective="scst", scst_samples=4, scst_baseline=baseline)
    monkeypatch.setattr(task, "reward", lambda generated, refs: -generated.lengths.float())
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    task.cider_reward = CiderDScorer([])  # the stand-in reward above is used instead
    batch = next(iter(dm.val_dataloader()))

    def greedy_length():
        task.eval()
        with torch.no_grad():
            return task(batch.images).lengths.float().mean().item()

    start = greedy_length()
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    for _ in range(25):
        task.train()
        loss, _ = task.compute_loss(batch, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start > 3 and greedy_length() < 0.5 * start


def test_scst_is_refused_without_enough_samples_or_reward():
    with pytest.raises(ValueError, match="scst_samples 1"):
        tiny_task(objective="scst", scst_samples=1, scst_baseline="mean")
    task, dm = tiny_task(objective="scst")
    with pytest.raises(RuntimeError, match="setup"):
        task.scst_loss(next(iter(dm.val_dataloader())))


@pytest.fixture(scope="module")
def xe_checkpoint(tmp_path_factory):
    """A tiny cross-entropy fit through the CLI (2 epochs of 2 steps): its last.ckpt."""
    root = tmp_path_factory.mktemp("xe")
    run_cli("fit", "--config", XE_CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--trainer.max_epochs", "2",
            "--trainer.default_root_dir", str(root))
    return root / "checkpoints" / "last.ckpt"


def _task_like(ckpt, **overrides):
    hp = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    dims = {"embed_dim": 16, "hidden_dim": 32, **overrides.pop("decoder", {})}
    return CaptioningTask(encoder=SmallCNNEncoder(channels=[8, 16]),
                          decoder=lambda d, v: CaptionDecoder(d, v, **dims),
                          vocab=overrides.pop("vocab", hp["vocab"]), init_from=str(ckpt), **overrides)


def test_init_from_loads_weights_at_fit_only(xe_checkpoint):
    saved = torch.load(xe_checkpoint, weights_only=True)["state_dict"]
    torch.manual_seed(123)
    task = _task_like(xe_checkpoint)
    assert not torch.equal(task.state_dict()["decoder.head.weight"], saved["decoder.head.weight"])
    task.setup("test")  # evaluating a fine-tuned checkpoint does not go back to the one it started from
    assert not torch.equal(task.state_dict()["decoder.head.weight"], saved["decoder.head.weight"])
    task.setup("fit")
    assert all(torch.equal(v, saved[k]) for k, v in task.state_dict().items())


def test_init_from_refuses_another_architecture_vocabulary_or_task(xe_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="another architecture.*decoder.rnn.weight_ih_l0"):
        _task_like(xe_checkpoint, decoder={"embed_dim": 8}).setup("fit")
    hp = torch.load(xe_checkpoint, weights_only=True)["hyper_parameters"]
    with pytest.raises(ValueError, match="another vocab"):
        _task_like(xe_checkpoint, vocab=[*hp["vocab"], "zebra"]).setup("fit")
    forged = torch.load(xe_checkpoint, weights_only=True)
    forged["hyper_parameters"]["_class_path"] = "apps.somewhere.OtherTask"
    torch.save(forged, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="is a apps.somewhere.OtherTask checkpoint"):
        _task_like(tmp_path / "other.ckpt").setup("fit")


def test_cli_scst_fine_tunes_from_init_from_weights_only(xe_checkpoint, tmp_path, capsys):
    """The SCST config through the CLI on other data sizes (the data adopts the checkpoint's vocabulary):
    training starts at step 0 (weights only), the best checkpoint is picked by val/cider, and test scores it."""
    start = torch.load(xe_checkpoint, weights_only=True)
    run_cli("fit", "--config", SCST_CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--data.num_train_scenes", "24",
            "--model.init_from", str(xe_checkpoint), "--trainer.default_root_dir", str(tmp_path))
    best = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    tuned = torch.load(best, weights_only=True)
    assert start["global_step"] == 4 and tuned["global_step"] == 2  # a fresh run of 2 steps, not a resumed one
    assert tuned["hyper_parameters"]["vocab"] == start["hyper_parameters"]["vocab"]
    assert "val/cider" in str(tuned["callbacks"])
    changed = [k for k, v in tuned["state_dict"].items() if k.startswith("decoder.") and not torch.equal(v, start["state_dict"][k])]
    assert changed  # SCST trained it
    metrics = tmp_path / "m.json"
    run_cli("test", "--config", SCST_CONFIG, *TINY_TRAINER, *TINY_CAPTIONING, "--ckpt_path", best,
            "--metrics_json", str(metrics))
    assert {"test/cider", "test/bleu4"} <= set(json.loads(metrics.read_text()))


def test_scst_with_up_down_reaches_every_decoder_parameter():
    from decoders.caption import UpDownDecoder

    torch.manual_seed(0)
    dm = CaptioningDataModule(num_train_scenes=16, num_val_scenes=4, num_test_scenes=4, batch_size=4)
    task = CaptioningTask(encoder=SmallCNNEncoder(channels=[8, 16], spatial=True),
                          decoder=lambda d, v: UpDownDecoder(d, v, embed_dim=8, hidden_dim=16, attn_dim=8),
                          vocab=dm.vocab, objective="scst", scst_samples=3, scst_baseline="mean")
    task.cider_reward = CiderDScorer(dm.train_references)
    task.log = lambda *a, **k: None
    task.train()
    loss, _ = task.compute_loss(next(iter(dm.val_dataloader())), "train")
    loss.backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing
