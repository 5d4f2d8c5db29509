"""Procedurally generated captioning scenes: one or two shapes on a noisy background, each scene with
several differently phrased reference captions.

Scenes are split by *content* (which objects, which relation), not by image: a test scene's combination of
objects never appears in training, so the model has to compose colour, shape, size and relation.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": (5.0, 6.5), "large": (10.5, 13.0)}  # radius range in pixels at 64 x 64
# Relation of the first object to the second, and its inverse for the swapped phrasing.
RELATIONS = {"left": "right", "above": "below"}
PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    x: float
    y: float
    radius: float

    def words(self) -> list[str]:
        return [self.size, self.colour, self.shape]


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    relation: str | None  # relation of objects[0] to objects[1] ("left" or "above"), None for one object
    background: int  # gray level
    noise_seed: int

    def content_key(self) -> str:
        parts = ["-".join(o.words()) for o in self.objects]
        return "|".join(parts + [self.relation or ""])

    def captions(self) -> list[list[str]]:
        """All reference captions, as word lists."""
        if len(self.objects) == 1:
            obj = ["a", *self.objects[0].words()]
            return [obj, ["there", "is", *obj], ["a", "single", *self.objects[0].words()]]
        a = ["a", *self.objects[0].words()]
        b = ["a", *self.objects[1].words()]
        rel, inv = PHRASES[self.relation].split(), PHRASES[RELATIONS[self.relation]].split()
        return [
            [*a, *rel, *b],
            [*b, *inv, *a],
            ["there", "is", *a, *rel, *b],
            [*a, "is", *rel, *b],
            [*b, "is", *inv, *a],
        ]


def split_of(content_key: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Stable hash of the scene content -> split, so equal content always lands in the same split."""
    u = int(hashlib.sha1(content_key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _random_object(rng: random.Random, x: float, y: float) -> SceneObject:
    size = rng.choice(sorted(SIZES))
    return SceneObject(rng.choice(sorted(COLOURS)), rng.choice(SHAPES), size, x, y, rng.uniform(*SIZES[size]))


def sample_scene(rng: random.Random, image_size: int = 64) -> Scene:
    """One random scene; two objects are placed so that one axis clearly dominates their offset."""
    margin = 14 * image_size / 64
    lo, hi = margin, image_size - margin
    background = rng.randint(90, 170)
    if rng.random() < 0.15:
        return Scene((_random_object(rng, rng.uniform(lo, hi), rng.uniform(lo, hi)),), None, background, rng.getrandbits(31))
    while True:
        x1, y1, x2, y2 = (rng.uniform(lo, hi) for _ in range(4))
        dx, dy = x2 - x1, y2 - y1
        major, minor = (abs(dx), abs(dy)) if abs(dx) > abs(dy) else (abs(dy), abs(dx))
        if major >= 24 * image_size / 64 and minor <= 0.4 * major:
            break
    first, second = _random_object(rng, x1, y1), _random_object(rng, x2, y2)
    if abs(dx) > abs(dy):
        relation = "left" if dx > 0 else "right"
    else:
        relation = "above" if dy > 0 else "below"
    if relation in ("right", "below"):  # store the canonical direction so content keys are unique
        first, second, relation = second, first, {"right": "left", "below": "above"}[relation]
    return Scene((first, second), relation, background, rng.getrandbits(31))


def sample_split(split: str, count: int, seed: int, image_size: int = 64) -> list[Scene]:
    """`count` scenes whose content belongs to `split`; deterministic for a seed."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    rng = random.Random(f"{seed}-{split}")
    scenes = []
    while len(scenes) < count:
        scene = sample_scene(rng, image_size)
        if split_of(scene.content_key()) == split:
            scenes.append(scene)
    return scenes


def _polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
    if shape == "triangle":
        return [(x, y - r), (x + r * 0.95, y + r * 0.75), (x - r * 0.95, y + r * 0.75)]
    if shape == "diamond":
        return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
    if shape == "cross":
        t = r * 0.35
        return [
            (x - t, y - r), (x + t, y - r), (x + t, y - t), (x + r, y - t), (x + r, y + t), (x + t, y + t),
            (x + t, y + r), (x - t, y + r), (x - t, y + t), (x - r, y + t), (x - r, y - t), (x - t, y - t),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Scene -> (H, W, 3) uint8 image: noisy gray background, shapes with slight colour jitter."""
    noise_rng = np.random.default_rng(scene.noise_seed)
    image = Image.new("RGB", (image_size, image_size), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        jitter = noise_rng.integers(-20, 21, size=3)
        colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter))
        if obj.shape == "circle":
            draw.ellipse([obj.x - obj.radius, obj.y - obj.radius, obj.x + obj.radius, obj.y + obj.radius], fill=colour)
        else:
            draw.polygon(_polygon(obj.shape, obj.x, obj.y, obj.radius), fill=colour)
    pixels = np.asarray(image, dtype=np.int16) + noise_rng.normal(0, 12, size=(image_size, image_size, 1)).astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)
