"""A copy-detection corpus made from real photographs that scikit-image ships inside its wheel.

The photos (``skimage/data``) are public domain or CC0 (scikit-image's ``data/_fetchers.py`` states
each one's source and licence: astronaut NASA public domain; camera, chelsea, coffee, rocket CC0 by
their photographers; brick, grass, gravel CC0 textures). Copies are made by re-encode, resize, crops
to 90-96%, shifts of the frame to 5% and crop + re-encode; hard negatives are distinct photos of the
same texture (disjoint halves of one texture sheet) and the same scene with an object moved.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

SCENES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "motorcycle_left")
TEXTURES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class Item:
    name: str
    group: str  # the source picture: items of one group are copies of each other
    kind: str  # original | reencode | resize | crop | shift | crop_reencode | moved_object
    data: bytes


def jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photo(name: str) -> Image.Image:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    with Image.open(next(folder.glob(f"{name}.*"))) as im:
        im = im.convert("RGB")
    w, h = im.size
    f = 400 / max(w, h)
    return im.resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS)


def originals() -> dict[str, Image.Image]:
    out = {n: _photo(n) for n in SCENES}
    for n in TEXTURES:  # two disjoint halves of one texture sheet: distinct photos of the same texture
        im = _photo(n)
        w, h = im.size
        out[f"{n}_left"] = im.crop((0, 0, w // 2, h))
        out[f"{n}_right"] = im.crop((w // 2, 0, w, h))
    return out


def _window(im: Image.Image, size: float, fx: float, fy: float) -> Image.Image:
    """A crop of ``size`` of each side whose top-left sits at (fx, fy) of the free margin."""
    w, h = im.size
    cw, ch = round(w * size), round(h * size)
    x, y = round((w - cw) * fx), round((h - ch) * fy)
    return im.crop((x, y, x + cw, y + ch))


def copies(name: str, im: Image.Image) -> list[tuple[str, bytes]]:
    w, h = im.size
    return [
        ("reencode", jpeg(im, 55)),
        ("resize", jpeg(im.resize((round(w * 0.7), round(h * 0.7)), Image.Resampling.BICUBIC), 85)),
        ("crop", jpeg(_window(im, 0.94, 0.5, 0.5), 90)),
        ("crop", jpeg(_window(im, 0.90, 0.2, 0.7), 90)),
        ("crop", jpeg(_window(im, 0.96, 1.0, 0.0), 90)),
        ("shift", jpeg(ImageChops.offset(im, round(0.05 * w), -round(0.03 * h)), 85)),  # the frame moved, wrapping
        ("shift", jpeg(_window(im, 0.95, 1.0, 0.6), 85)),  # a 95% window moved by 5% across the frame
        ("crop_reencode", jpeg(_window(im, 0.92, 0.5, 0.5), 50)),
    ]


def moved_object(im: Image.Image) -> bytes:
    """The same scene with one object moved: a patch (15% of the side) pasted 40% away."""
    import numpy as np

    w, h = im.size
    pw, ph = round(0.15 * w), round(0.15 * h)
    grey = np.asarray(im.convert("L"), dtype=np.float32)
    spots = [(round(fx * w), round(fy * h)) for fx in (0.1, 0.3, 0.5, 0.7) for fy in (0.1, 0.3, 0.5, 0.7)]
    x, y = max(spots, key=lambda p: grey[p[1]:p[1] + ph, p[0]:p[0] + pw].std())  # the most detailed patch: an object
    tx, ty = (x + w // 2) % (w - pw), (y + h // 3) % (h - ph)
    out = im.copy()
    out.paste(im.crop((x, y, x + pw, y + ph)), (tx, ty))
    return jpeg(out, 85)


def corpus() -> list[Item]:
    """Originals first, then their copies and the hard negatives (what later shards would hold)."""
    origs = originals()
    items = [Item(n, n, "original", jpeg(im, 92)) for n, im in origs.items()]
    for n, im in origs.items():
        items += [Item(f"{n}:{kind}:{i}", n, kind, data) for i, (kind, data) in enumerate(copies(n, im))]
        if n in SCENES:
            items.append(Item(f"{n}:moved_object", f"{n}:moved_object", "moved_object", moved_object(im)))
    return items
