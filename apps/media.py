"""Logger-agnostic media logging: wandb tables/images, TensorBoard images/text, nothing for CSV."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor


def to_uint8(pixels: Tensor, mean: Tensor | float = 0.0, std: Tensor | float = 1.0) -> np.ndarray:
    """(..., C, H, W) pixels normalised as (x - mean) / std -> (..., H, W, 3) uint8 pictures (gray repeated to RGB)."""
    pixels = pixels.detach().float().cpu() * torch.as_tensor(std).view(-1, 1, 1) + torch.as_tensor(mean).view(-1, 1, 1)
    pictures = (pixels.clamp(0, 1) * 255).round().byte().movedim(-3, -1).numpy()
    return np.repeat(pictures, 3, axis=-1) if pictures.shape[-1] == 1 else pictures


def log_image_table(
    logger: Logger | None, key: str, images: list[np.ndarray], columns: list[str], rows: list[list[Any]], step: int
) -> None:
    """One row per image: (H, W, 3) uint8 picture plus text columns."""
    if isinstance(logger, WandbLogger):
        import wandb

        data = [[wandb.Image(img), *row] for img, row in zip(images, rows)]
        logger.log_table(key=key, columns=["image", *columns], data=data, step=step)
    elif isinstance(logger, TensorBoardLogger):
        for i, (img, row) in enumerate(zip(images, rows)):
            logger.experiment.add_image(f"{key}/{i}", img, step, dataformats="HWC")
            logger.experiment.add_text(f"{key}/{i}", " | ".join(f"{c}: {v}" for c, v in zip(columns, row)), step)


def log_image(logger: Logger | None, key: str, image: np.ndarray, step: int, caption: str | None = None) -> None:
    """A single (H, W, 3) uint8 picture, e.g. a confusion matrix."""
    if isinstance(logger, WandbLogger):
        logger.log_image(key=key, images=[image], caption=[caption] if caption else None, step=step)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image, step, dataformats="HWC")


def log_audio_table(
    logger: Logger | None, key: str, audios: list[np.ndarray], sample_rate: int, columns: list[str],
    rows: list[list[Any]], step: int,
) -> None:
    """One row per clip: (S,) float waveform in [-1, 1] plus text columns. wandb gets the text as a table at `key`
    and the clips as audio media at `<key>_audio`, captioned with the same text and the row number: wandb 0.31
    writes an `Audio` inside a table as the bare string "Audio", so clips in a table would be lost."""
    if isinstance(logger, WandbLogger):
        import tempfile
        import wave

        import wandb

        # WAV files (wandb.Audio needs the soundfile package either way); the run copies each one when it is
        # logged, so the temporary folder goes right after
        with tempfile.TemporaryDirectory(prefix="rnnsuite-audio-") as folder:
            clips = []
            for i, (audio, row) in enumerate(zip(audios, rows)):
                path = f"{folder}/{i}.wav"
                with wave.open(path, "wb") as f:
                    f.setnchannels(1)
                    f.setsampwidth(2)
                    f.setframerate(sample_rate)
                    f.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
                caption = f"{i}: " + " | ".join(f"{c}: {v}" for c, v in zip(columns, row))
                clips.append(wandb.Audio(path, sample_rate=sample_rate, caption=caption))
            logger.experiment.log({f"{key}_audio": clips, "trainer/global_step": step})
        logger.log_table(key=key, columns=["clip", *columns], data=[[i, *row] for i, row in enumerate(rows)], step=step)
    elif isinstance(logger, TensorBoardLogger):
        for i, (audio, row) in enumerate(zip(audios, rows)):
            logger.experiment.add_audio(f"{key}/{i}", audio[None], step, sample_rate=sample_rate)
            logger.experiment.add_text(f"{key}/{i}", " | ".join(f"{c}: {v}" for c, v in zip(columns, row)), step)


def attention_strip(picture: np.ndarray, weights: np.ndarray, words: list[str], cell: int = 96, per_row: int = 8) -> np.ndarray:
    """(H, W, 3) image + attention (L, N) over a square grid + L words -> one uint8 picture: the image, then per
    word the image tinted by where the decoder looked, the word written underneath; at most `per_row` pictures a
    row (a long caption wraps instead of growing thousands of pixels wide)."""
    from PIL import Image, ImageDraw

    side = int(round(weights.shape[-1] ** 0.5))
    base = Image.fromarray(picture).convert("RGB").resize((cell, cell), Image.BILINEAR)
    cols, rows = min(per_row, len(words) + 1), -(-(len(words) + 1) // per_row)
    strip = Image.new("RGB", (cols * cell, rows * (cell + 14)), (255, 255, 255))
    strip.paste(base, (0, 0))
    draw = ImageDraw.Draw(strip)
    for k, word in enumerate(words):
        heat = weights[k].reshape(side, side)
        heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
        mask = Image.fromarray((heat * 255).astype(np.uint8)).resize((cell, cell), Image.BILINEAR)
        tinted = Image.composite(Image.new("RGB", (cell, cell), (255, 40, 0)), base, mask.point(lambda v: int(v * 0.6)))
        x, y = (k + 1) % per_row * cell, (k + 1) // per_row * (cell + 14)
        strip.paste(tinted, (x, y))
        draw.text((x + 3, y + cell + 1), word, fill=(0, 0, 0))
    return np.asarray(strip)


def log_animation(logger: Logger | None, key: str, gif_path: str, step: int) -> None:
    """An animated GIF file already written to disk (wandb shows it as a video; other loggers keep the file only)."""
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({key: wandb.Video(gif_path, format="gif"), "trainer/global_step": step})


def save_gif(frames: list[np.ndarray], path: str, ms_per_frame: int = 150) -> None:
    """(H, W, 3) uint8 frames -> an animated GIF at `path` (written to a temporary name first, then moved)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    tmp = f"{path}.tmp.gif"
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    os.replace(tmp, path)


def log_video_table(
    logger: Logger | None, key: str, gif_paths: list[str], columns: list[str], rows: list[list[Any]], step: int
) -> None:
    """One row per clip: an animated GIF already on disk plus text columns (TensorBoard gets the text only)."""
    if isinstance(logger, WandbLogger):
        import wandb

        data = [[wandb.Video(path, format="gif"), *row] for path, row in zip(gif_paths, rows)]
        logger.log_table(key=key, columns=["clip", *columns], data=data, step=step)
    elif isinstance(logger, TensorBoardLogger):
        for i, (path, row) in enumerate(zip(gif_paths, rows)):
            text = " | ".join(f"{c}: {v}" for c, v in zip(columns, row))
            logger.experiment.add_text(f"{key}/{i}", f"{text} | clip: {path}", step)


def draw_confusion_matrix(matrix: np.ndarray, class_names: list[str], cell: int = 28) -> np.ndarray:
    """(C, C) counts (rows = true class) -> (H, W, 3) uint8 picture, rows normalised, counts in the cells."""
    from PIL import Image, ImageDraw, ImageFont

    C = len(class_names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    font = ImageFont.load_default()
    label_w = max(60, 8 + 6 * max(len(n) for n in class_names))  # room for the axis titles in the corner
    img = Image.new("RGB", (label_w + C * cell + 4, label_w + C * cell + 4), "white")
    draw = ImageDraw.Draw(img)
    draw.text((2, 2), "rows: true", fill="black", font=font)  # the axis titles, in the empty corner
    draw.text((2, 14), "columns:", fill="black", font=font)
    draw.text((2, 26), "predicted", fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((2, label_w + i * cell + cell // 2 - 5), name, fill="black", font=font)  # true class, rows
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((2, cell // 2 - 5), name, fill="black", font=font)
        img.paste(column.rotate(90, expand=True), (label_w + i * cell, 0))  # predicted class, columns
    for i in range(C):
        for j in range(C):
            shade = int(255 * (1 - rates[i, j]))
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x, y = label_w + j * cell, label_w + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            if matrix[i, j]:
                ink = "black" if shade > 110 else "white"
                draw.text((x + 3, y + cell // 2 - 5), str(int(matrix[i, j])), fill=ink, font=font)
    return np.asarray(img)


def log_confusion_matrix(logger: Logger | None, key: str, matrix: Tensor, class_names: list[str], step: int) -> None:
    """A (C, C) torchmetrics confusion matrix drawn by `draw_confusion_matrix`."""
    picture = draw_confusion_matrix(matrix.cpu().numpy(), class_names)
    log_image(logger, key, picture, step, caption="rows: true class, columns: predicted class")


def log_text_table(logger: Logger | None, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
    """A table of text and numbers (wandb); TensorBoard gets one text entry per row."""
    if isinstance(logger, WandbLogger):
        logger.log_table(key=key, columns=columns, data=rows, step=step)
    elif isinstance(logger, TensorBoardLogger):
        for i, row in enumerate(rows):
            logger.experiment.add_text(f"{key}/{i}", " | ".join(f"{c}: {v}" for c, v in zip(columns, row)), step)
