"""Generated activity clips whose class is defined only by motion over time.

A real MNIST digit (the actor) moves over a textured background on a torus (what leaves one edge comes
back at the opposite one), among textured squares that jitter at random (distractors). Ten classes:

    move_right move_left move_down move_up   constant velocity
    circle_cw circle_ccw                      orbiting a point, clockwise or counter-clockwise
    grow shrink                               scale changing exponentially
    zigzag                                    horizontal travel with an up/down triangle wave
    bounce                                    horizontal travel that reverses once

Why no single frame tells the class: every class draws the actor's position uniformly on the torus (so
its position is uniform at every frame), its orientation uniformly over 360 degrees, and its scale so that
the middle frame's scale has the same distribution in every class; colours, background and distractors
do not depend on the class. Only the change between frames does.

Splits are disjoint: train/val/test use MNIST's own train/valid/test digits and independent seeds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
from PIL import Image

from datamodules.base import cache_root
from datamodules.readers.mnist import load_mnist

CLASS_NAMES = (
    "move_right", "move_left", "move_down", "move_up",
    "circle_cw", "circle_ccw", "grow", "shrink", "zigzag", "bounce",
)
SPLITS = {"train": ("train", 0), "val": ("valid", 1), "test": ("test", 2)}  # split -> (MNIST part, seed offset)
GENERATOR_VERSION = 4  # bump when the rendering changes, so stale caches are not reused
SCALE_RANGE = (0.8, 1.2)  # actor scale (middle frame) relative to `actor_fraction` of the frame




def _trajectory(label: int, rng: np.random.Generator, T: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Actor (x, y) positions (T, 2) in pixels, rotation angles (T,) in degrees and scales (T,) for one clip."""
    t = np.arange(T, dtype=np.float64)
    mid = (T - 1) // 2  # the frame FrameEncoder(frames=one) shows the single-frame baseline
    start = rng.uniform(0, size, size=2)
    angle0 = rng.uniform(0, 360)
    scale = np.full(T, rng.uniform(*SCALE_RANGE))
    angle = np.full(T, angle0)
    vel = np.zeros((T, 2))
    name = CLASS_NAMES[label]
    speed = rng.uniform(1.5, 2.5) * size / 32
    if name.startswith("move_"):
        direction = {"move_right": (1, 0), "move_left": (-1, 0), "move_down": (0, 1), "move_up": (0, -1)}[name]
        vel[:] = np.array(direction) * speed
    elif name.startswith("circle_"):
        # orbit of radius r; image y points down, so a growing angle turns clockwise on screen
        turn = (1 if name == "circle_cw" else -1) * rng.uniform(0.7, 1.0) * 2 * math.pi / max(T - 1, 1)
        phase = rng.uniform(0, 2 * math.pi) + turn * t
        radius = rng.uniform(0.2, 0.25) * size
        orbit = radius * np.stack([np.cos(phase), np.sin(phase)], axis=1)  # (T, 2)
        vel[:-1] = np.diff(orbit, axis=0)
    elif name in ("grow", "shrink"):
        rate = math.log(rng.uniform(1.7, 2.1)) / max(1, T - 1) * (1 if name == "grow" else -1)
        scale = scale * np.exp(rate * (t - mid))  # the middle frame keeps the class-independent scale
    elif name == "zigzag":
        vel[:, 0] = rng.choice([-1, 1]) * speed
        period = 4
        wave = np.where((t // (period / 2)) % 2 == 0, 1.0, -1.0) * 3.0 * size / 32  # up/down every 2 frames
        vel[:, 1] = wave * rng.choice([-1, 1])
    elif name == "bounce":
        turn = rng.integers(round(T / 3), round(2 * T / 3) + 1)
        vel[:, 0] = rng.choice([-1, 1]) * speed * np.where(t < turn, 1, -1)
    positions = start + np.cumsum(np.vstack([np.zeros((1, 2)), vel[:-1]]), axis=0)
    return positions % size, angle, scale


def _actor_alpha(digit: np.ndarray, angle: float, scale: float, size: int, actor_fraction: float) -> np.ndarray:
    """(28, 28) uint8 digit -> (size, size) float alpha, rotated and scaled about the frame centre."""
    k = scale * actor_fraction * size / 20.0  # output pixels per digit pixel (an MNIST digit spans ~20 of its 28 px)
    th = math.radians(angle)
    c, s = math.cos(th) / k, math.sin(th) / k
    half = size / 2
    # PIL wants the inverse map: output (x, y) -> input (a x + b y + e, c x + d y + f), rotation about the centres.
    matrix = (c, -s, 14 - c * half + s * half, s, c, 14 - s * half - c * half)
    img = Image.fromarray(digit).transform((size, size), Image.AFFINE, matrix, resample=Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float texture: low-frequency colour blobs plus a static fine grain and stripes."""
    coarse = rng.uniform(20, 120, size=(4, 4, 3)).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    grain = rng.normal(0, 8, size=(size, size, 1))
    yy, xx = np.mgrid[0:size, 0:size]
    theta, freq = rng.uniform(0, math.pi), rng.uniform(0.5, 1.2)
    stripes = 8 * np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)))[..., None]
    return blobs + grain + stripes


def _distractor(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A textured square: (k, k) alpha (a checker of two opacities) and its RGB colour."""
    k = int(rng.integers(4, 8))
    checker = (np.indices((k, k)).sum(0) % 2).astype(np.float32)
    return 0.55 + 0.4 * checker, rng.uniform(60, 220, size=3)


def render_clip(label: int, digit: np.ndarray, rng: np.random.Generator, num_frames: int, size: int,
                num_distractors: int = 2, actor_fraction: float = 0.45) -> np.ndarray:
    """One clip of class `label` -> (T, size, size, 3) uint8 frames."""
    positions, angles, scales = _trajectory(label, rng, num_frames, size)
    background = _background(rng, size)
    colour = rng.uniform(190, 255, size=3)
    distractors = []
    for _ in range(num_distractors):
        alpha, dcolour = _distractor(rng)
        # a random walk: moves, but with no consistent direction, rotation or growth
        walk = rng.uniform(0, size, size=2) + np.cumsum(rng.integers(-1, 2, size=(num_frames, 2)), axis=0)
        distractors.append((alpha, dcolour, walk))
    frames = np.empty((num_frames, size, size, 3), dtype=np.float32)
    for t in range(num_frames):
        frame = background.copy()
        for alpha, dcolour, walk in distractors:
            canvas = np.zeros((size, size), dtype=np.float32)
            canvas[: alpha.shape[0], : alpha.shape[1]] = alpha
            canvas = np.roll(canvas, (int(walk[t, 1]) % size, int(walk[t, 0]) % size), axis=(0, 1))[..., None]
            frame = frame * (1 - canvas) + dcolour * canvas
        alpha = _actor_alpha(digit, angles[t], scales[t], size, actor_fraction)
        # the actor is rendered at the centre; rolling moves it with wrap-around (the torus)
        x, y = np.round(positions[t]).astype(int) - size // 2
        alpha = np.roll(alpha, (y, x), axis=(0, 1))[..., None]
        frames[t] = frame * (1 - alpha) + colour * alpha
    frames += rng.normal(0, 4, size=frames.shape[:3] + (1,))  # per-frame sensor noise
    return np.clip(frames, 0, 255).astype(np.uint8)


def generate_split(split: str, count: int, num_frames: int, size: int, seed: int, num_distractors: int = 2
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`count` clips, balanced over classes -> (uint8 frames (N, T, H, W, 3), int64 labels (N,))."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    part, offset = SPLITS[split]
    digits, _ = load_mnist(part)
    rng = np.random.default_rng([seed, offset])
    labels = rng.permutation(np.arange(count) % len(CLASS_NAMES)).astype(np.int64)
    frames = np.empty((count, num_frames, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        frames[i] = render_clip(int(label), digits[rng.integers(len(digits))], rng, num_frames, size, num_distractors)
    return frames, labels


def load_split(split: str, count: int, num_frames: int, size: int, seed: int, num_distractors: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
    """`generate_split`, cached on disk under $RNNSUITE_CACHE/activity/ keyed by every generation parameter."""
    params = dict(split=split, count=count, num_frames=num_frames, size=size, seed=seed,
                  num_distractors=num_distractors, version=GENERATOR_VERSION)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_root("activity"), f"motion_clips-{split}-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as stored:
            return stored["frames"], stored["labels"]
    frames, labels = generate_split(split, count, num_frames, size, seed, num_distractors)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez(f, frames=frames, labels=labels)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
    return frames, labels
