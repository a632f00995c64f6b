"""Draw the demo's sample pictures: flat illustrations, 600x338 PNG, a few KB each.

    python3 scripts/sample_pictures.py      # writes digest/samples/pictures/*.png

Only the standard library: each shape is a signed distance function, so edges are smoothed with
one evaluation per pixel, and the flat colours compress to a few KB under zlib. The pictures are
committed; run this again only to change them.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

WIDTH, HEIGHT = 600, 338
FOLDER = Path(__file__).resolve().parent.parent / "digest" / "samples" / "pictures"

Colour = tuple[int, int, int]
Distance = Callable[[float, float], float]  # negative inside the shape, in pixels
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 the shape lies within


class Canvas:
    def __init__(self, background: Colour) -> None:
        self.rows = [[list(map(float, background)) for _ in range(WIDTH)] for _ in range(HEIGHT)]

    def fill(self, shape: tuple[Distance, Box], colour: Colour, alpha: float = 1.0) -> None:
        distance, (x0, y0, x1, y1) = shape
        for y in range(max(0, int(y0) - 1), min(HEIGHT, int(y1) + 2)):
            row = self.rows[y]
            for x in range(max(0, int(x0) - 1), min(WIDTH, int(x1) + 2)):
                cover = min(1.0, max(0.0, 0.5 - distance(x + 0.5, y + 0.5))) * alpha
                if cover:
                    pixel = row[x]
                    for i in range(3):
                        pixel[i] += (colour[i] - pixel[i]) * cover

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(round(value) for pixel in row for value in pixel) for row in self.rows
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


# --- shapes -------------------------------------------------------------------------------------


def circle(cx: float, cy: float, r: float) -> tuple[Distance, Box]:
    return (lambda x, y: math.hypot(x - cx, y - cy) - r), (cx - r, cy - r, cx + r, cy + r)


def ring(cx: float, cy: float, r: float, width: float) -> tuple[Distance, Box]:
    half = width / 2
    box = (cx - r - half, cy - r - half, cx + r + half, cy + r + half)
    return (lambda x, y: abs(math.hypot(x - cx, y - cy) - r) - half), box


def rect(x0: float, y0: float, x1: float, y1: float, radius: float = 0) -> tuple[Distance, Box]:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - radius, (y1 - y0) / 2 - radius

    def distance(x: float, y: float) -> float:
        dx, dy = abs(x - cx) - hx, abs(y - cy) - hy
        return math.hypot(max(dx, 0), max(dy, 0)) + min(max(dx, dy), 0) - radius

    return distance, (x0, y0, x1, y1)


def line(points: Sequence[tuple[float, float]], width: float) -> tuple[Distance, Box]:
    """A polyline of the given stroke width, with round joins and ends."""
    half = width / 2
    segments = list(itertools.pairwise(points))

    def distance(x: float, y: float) -> float:
        best = math.inf
        for (ax, ay), (bx, by) in segments:
            vx, vy = bx - ax, by - ay
            t = max(0.0, min(1.0, ((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy)))
            best = min(best, math.hypot(x - ax - t * vx, y - ay - t * vy))
        return best - half

    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return distance, (min(xs) - half, min(ys) - half, max(xs) + half, max(ys) + half)


def polygon(points: Sequence[tuple[float, float]]) -> tuple[Distance, Box]:
    """A convex polygon, its points clockwise on screen (y down)."""
    edges = []
    for (ax, ay), (bx, by) in zip(points, [*points[1:], points[0]], strict=True):
        nx, ny = by - ay, ax - bx
        length = math.hypot(nx, ny)
        edges.append((nx / length, ny / length, (nx * ax + ny * ay) / length))

    def distance(x: float, y: float) -> float:
        return max(nx * x + ny * y - d for nx, ny, d in edges)

    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return distance, (min(xs), min(ys), max(xs), max(ys))


def cut(shape: tuple[Distance, Box], hole: tuple[Distance, Box]) -> tuple[Distance, Box]:
    outer, inner = shape[0], hole[0]
    return (lambda x, y: max(outer(x, y), -inner(x, y))), shape[1]


def below(shape: tuple[Distance, Box], top: float) -> tuple[Distance, Box]:
    """The part of shape under the line y = top."""
    inside = shape[0]
    x0, _, x1, y1 = shape[1]
    return (lambda x, y: max(inside(x, y), top - y)), (x0, top, x1, y1)


# --- the pictures -------------------------------------------------------------------------------

TEAL, DEEP, MINT, CREAM, WHITE = (
    (15, 118, 110),
    (19, 38, 42),
    (204, 232, 226),
    (250, 243, 230),
    (255, 255, 255),
)


def sleep() -> Canvas:
    canvas = Canvas((28, 44, 84))
    for x, y, r in (
        (80, 60, 3),
        (150, 110, 2),
        (250, 50, 2.5),
        (520, 80, 3),
        (470, 200, 2),
        (90, 250, 2),
        (350, 290, 2.5),
        (560, 270, 2),
    ):
        canvas.fill(circle(x, y, r), (255, 244, 214))
    canvas.fill(cut(circle(300, 169, 90), circle(345, 140, 80)), (255, 226, 150))
    canvas.fill(rect(0, 300, 600, 338), (20, 32, 64))
    return canvas


def breakfast() -> Canvas:
    canvas = Canvas((253, 236, 210))
    canvas.fill(rect(0, 250, 600, 338), (235, 204, 160))
    canvas.fill(below(circle(300, 170, 150), 170), WHITE)
    canvas.fill(rect(150, 160, 450, 180, 10), (242, 242, 236))
    for x, y, r, colour in (
        (220, 160, 26, (94, 53, 177)),
        (270, 150, 22, (198, 40, 40)),
        (320, 158, 24, (94, 53, 177)),
        (370, 150, 20, (251, 140, 0)),
        (250, 175, 16, (198, 40, 40)),
        (345, 175, 15, (121, 85, 72)),
    ):
        canvas.fill(circle(x, y, r), colour)
    return canvas


def soup() -> Canvas:
    canvas = Canvas((255, 224, 178))
    canvas.fill(rect(0, 270, 600, 338), (141, 110, 99))
    canvas.fill(rect(170, 140, 430, 280, 28), (191, 54, 12))
    canvas.fill(rect(150, 128, 450, 152, 12), (216, 67, 21))
    canvas.fill(rect(120, 170, 180, 190, 10), (216, 67, 21))
    canvas.fill(rect(420, 170, 480, 190, 10), (216, 67, 21))
    for x in (250, 300, 350):
        canvas.fill(line([(x, 110), (x - 12, 85), (x, 60), (x - 12, 35)], 8), WHITE, 0.7)
    return canvas


def sunrise() -> Canvas:
    canvas = Canvas((255, 209, 128))
    canvas.fill(circle(300, 230, 110), (255, 143, 0))
    canvas.fill(circle(140, 420, 230), (46, 125, 50))
    canvas.fill(circle(470, 440, 250), (27, 94, 32))
    canvas.fill(rect(0, 300, 600, 338), (27, 94, 32))
    return canvas


def stairs() -> Canvas:
    canvas = Canvas(MINT)
    for step in range(6):
        canvas.fill(
            rect(60 + step * 80, 290 - step * 40, 600, 338), TEAL if step % 2 else (17, 94, 89)
        )
    canvas.fill(circle(120, 90, 40), (255, 183, 77))
    return canvas


def path() -> Canvas:
    canvas = Canvas((187, 222, 251))
    canvas.fill(circle(120, 500, 300), (129, 199, 132))
    canvas.fill(circle(520, 520, 320), (102, 187, 106))
    canvas.fill(
        line([(300, 338), (340, 280), (260, 230), (330, 190), (300, 165)], 26), (255, 236, 179)
    )
    canvas.fill(circle(480, 80, 36), (255, 241, 118))
    return canvas


def shield() -> Canvas:
    canvas = Canvas((224, 242, 241))
    canvas.fill(polygon([(200, 60), (400, 60), (400, 190), (300, 290), (200, 190)]), TEAL)
    canvas.fill(rect(280, 100, 320, 220, 6), WHITE)
    canvas.fill(rect(240, 140, 360, 180, 6), WHITE)
    return canvas


def heartbeat() -> Canvas:
    canvas = Canvas((252, 228, 236))
    for x in range(0, WIDTH, 50):
        canvas.fill(rect(x, 0, x + 1, HEIGHT), (248, 187, 208))
    for y in range(19, HEIGHT, 50):
        canvas.fill(rect(0, y, WIDTH, y + 1), (248, 187, 208))
    beat = [
        (0, 180),
        (180, 180),
        (210, 150),
        (240, 180),
        (270, 180),
        (295, 70),
        (325, 280),
        (350, 180),
        (400, 180),
        (430, 155),
        (460, 180),
        (600, 180),
    ]
    canvas.fill(line(beat, 10), (194, 24, 91))
    return canvas


def cells() -> Canvas:
    canvas = Canvas((232, 234, 246))
    canvas.fill(circle(300, 169, 140), WHITE)
    canvas.fill(ring(300, 169, 140, 14), (57, 73, 171))
    for x, y, r in ((250, 120, 30), (340, 110, 24), (360, 200, 34), (260, 215, 26), (310, 165, 14)):
        canvas.fill(circle(x, y, r), (121, 134, 203))
        canvas.fill(circle(x + r / 4, y - r / 4, r / 3), (57, 73, 171))
    return canvas


def water() -> Canvas:
    canvas = Canvas((225, 245, 254))
    canvas.fill(circle(300, 200, 80), (3, 155, 229))
    canvas.fill(polygon([(300, 50), (369, 160), (231, 160)]), (3, 155, 229))
    canvas.fill(circle(270, 210, 18), WHITE, 0.6)
    for y in (300, 322):
        canvas.fill(
            line([(x, y + 8 * math.sin(x / 30)) for x in range(0, 601, 15)], 6), (129, 212, 250)
        )
    return canvas


PICTURES: dict[str, Callable[[], Canvas]] = {
    "sleep": sleep,
    "breakfast": breakfast,
    "soup": soup,
    "sunrise": sunrise,
    "stairs": stairs,
    "path": path,
    "shield": shield,
    "heartbeat": heartbeat,
    "cells": cells,
    "water": water,
}


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, draw in PICTURES.items():
        data = draw().png()
        (FOLDER / f"{name}.png").write_bytes(data)
        print(f"{name}.png: {len(data):,} bytes")


if __name__ == "__main__":
    main()
