"""Sample inputs for each task, drawn from the project's own generators (no download): what the web demo's
"generate" buttons give and what the API tests predict on. Each is the kind of input the shipped checkpoint was
trained on, from the held-out (test) part of its generator."""
from __future__ import annotations

import os

import numpy as np


def sample_image(seed: int = 0, size: int = 64) -> tuple[np.ndarray, str]:
    """A generated test scene -> ((size, size, 3) uint8 picture, one reference caption)."""
    from datamodules.synthetic import scenes

    (scene,) = scenes.sample_split("test", 1, seed, size)
    return scenes.render(scene, size), " ".join(scene.captions()[0])


def sample_video(path: str, seed: int = 0, num_frames: int = 8, size: int = 32, label: int | None = None) -> str:
    """A generated motion clip of an MNIST test digit written as an H.264 .mp4 at `path` -> its class name."""
    import av

    from datamodules.synthetic import motion_clips
    from datamodules.readers.mnist import load_mnist

    rng = np.random.default_rng([seed, 99])
    label = int(rng.integers(len(motion_clips.CLASS_NAMES))) if label is None else label
    digits, _ = load_mnist("test")
    frames = motion_clips.render_clip(label, digits[rng.integers(len(digits))], rng, num_frames, size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.options = {"crf": "10"}  # near-lossless: the clip is tiny
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return motion_clips.CLASS_NAMES[label]


def sample_speech(text: str = "the cat sat on the mat", voice: str = "en-us+m7", sample_rate: int = 16000
                  ) -> tuple[np.ndarray, list[str]]:
    """`text` spoken by espeak-ng (a test voice by default) -> ((S,) float32 waveform, its phonemes)."""
    from datamodules.synthetic.espeak import Synthesizer

    utterance = Synthesizer.get().speak(text, voice, sample_rate=sample_rate)
    return utterance.audio.numpy(), list(utterance.phonemes)


def sample_frames(count: int = 1, seed: int = 0, seq_len: int = 20) -> np.ndarray:
    """Moving MNIST test sequences -> (count, seq_len, 64, 64) uint8 (the first 10 are what a forecast sees)."""
    from datamodules.synthetic.moving_mnist import MovingMNIST

    source = MovingMNIST("test", count + seed, seq_len, seed=0)
    return np.stack([source[seed + i] for i in range(count)])
