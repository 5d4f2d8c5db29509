"""Media helpers: sizes a browser can show, nothing left behind in /tmp."""
import glob
import os
import tempfile

import numpy as np

from apps.media import attention_strip, log_audio_table


def test_a_long_caption_wraps_its_attention_strip():
    picture = np.zeros((32, 32, 3), np.uint8)
    weights = np.random.default_rng(0).random((20, 16))  # 20 words over a 4 x 4 grid
    strip = attention_strip(picture, weights / weights.sum(1, keepdims=True), [f"w{i}" for i in range(20)], cell=96)
    assert strip.shape[1] == 8 * 96 and strip.shape[0] == 3 * (96 + 14)  # 21 pictures: 8 a row, 3 rows
    short = attention_strip(picture, weights[:2], ["a", "cat"], cell=96)
    assert short.shape[:2] == (96 + 14, 3 * 96)


def test_logged_audio_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp/TemporaryDirectory put folders
    logger = WandbLogger(offline=True, save_dir=str(tmp_path / "run"))
    try:
        log_audio_table(logger, "val/samples", [np.zeros(1600, np.float32)], 16000, ["text"], [["hi"]], step=0)
    finally:
        wandb.finish()
    assert not glob.glob(os.path.join(str(tmp_path), "rnnsuite-audio-*"))
    assert len(glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "files" / "media" / "audio" / "**" / "*.wav"), recursive=True)) == 1
