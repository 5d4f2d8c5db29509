"""Line charts as PNG with PIL alone (matplotlib is not a dependency): the figures of `rnnsuite study`."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


class Series(NamedTuple):
    """One curve: y over x, and optionally a band y ± spread (the std over seeds). Non-finite points are gaps."""
    label: str
    x: Sequence[float]
    y: Sequence[float]
    spread: Sequence[float] | None = None


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def line_chart(path: str, series: list[Series], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (640, 400), y_range: tuple[float, float] | None = None) -> None:
    """Write `series` as one PNG chart at `path`, with axes, ticks, a legend and the title; `y_range` fixes the
    y axis (bands are cut to it), else it fits the data."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = size
    left, right, top, bottom = 62, 150, 28, 44  # margins: y ticks, legend, title, x ticks + label
    font = ImageFont.load_default()
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    points = [(x, y, s) for c in series for x, y, s in zip(c.x, c.y, c.spread or [0.0] * len(c.y))
              if math.isfinite(x) and math.isfinite(y) and math.isfinite(s)]
    if not points:
        points = [(0.0, 0.0, 0.0), (1.0, 1.0, 0.0)]
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] - p[2] for p in points), max(p[1] + p[2] for p in points)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = 0.05 * (y_hi - y_lo) if y_hi > y_lo else 0.5
    y_lo, y_hi = (y_lo - pad, y_hi + pad) if y_range is None else y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, y_lo), y_hi)
        return (left + (x - x_lo) / (x_hi - x_lo) * (W - left - right),
                H - bottom - (y - y_lo) / (y_hi - y_lo) * (H - top - bottom))

    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    for t in _ticks(y_lo, y_hi):
        _, py = to_px(x_lo, t)
        draw.line([left, py, W - right, py], fill=(230, 230, 230))
        draw.text((4, py - 5), _fmt(t), fill="black", font=font)
    for t in _ticks(x_lo, x_hi, 6):
        px, _ = to_px(t, y_lo)
        draw.line([px, H - bottom, px, H - bottom + 4], fill="black")
        draw.text((px - 8, H - bottom + 6), _fmt(t), fill="black", font=font)
    draw.text((left, 6), title, fill="black", font=font)
    draw.text(((left + W - right) // 2 - 3 * len(xlabel), H - 16), xlabel, fill="black", font=font)
    draw.text((left, top - 12), ylabel, fill=(80, 80, 80), font=font)

    runs = [_finite_runs(c) for c in series]
    for i, c in enumerate(series):  # bands first, so that no band covers another series' line
        light = tuple(255 - (255 - v) // 5 for v in COLOURS[i % len(COLOURS)])
        for run in runs[i]:
            if len(run) > 1 and any(s for _, _, s in run):
                draw.polygon([to_px(x, y + s) for x, y, s in run] + [to_px(x, y - s) for x, y, s in reversed(run)],
                             fill=light)
    for i, c in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for run in runs[i]:
            if len(run) > 1:
                draw.line([to_px(x, y) for x, y, _ in run], fill=colour, width=2)
            else:
                px, py = to_px(run[0][0], run[0][1])
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        ly = top + 6 + 16 * i
        draw.line([W - right + 8, ly + 5, W - right + 28, ly + 5], fill=colour, width=3)
        draw.text((W - right + 32, ly), c.label[:19], fill="black", font=font)
    img.save(path)


def _finite_runs(c: Series) -> list[list[tuple[float, float, float]]]:
    """The stretches of consecutive finite (x, y, spread) points of one series: a NaN or inf is a gap."""
    runs: list[list[tuple[float, float, float]]] = [[]]
    for p in zip(c.x, c.y, c.spread or [0.0] * len(c.y)):
        if all(math.isfinite(v) for v in p):
            runs[-1].append(p)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]
