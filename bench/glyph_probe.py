"""A fifth renderer for the scale probe: the shapes as font glyphs, rasterised by FreeType.

None of the other renderers draws text. Here each shape is a Unicode glyph (U+25CF ●, U+25A0 ■, U+25B2 ▲, U+2605 ★,
U+271A ✚, U+25CB ○, U+25C6 ◆, U+2665 ♥) from one of the four fonts that ship with matplotlib (DejaVu Sans, its
bold, its monospace, STIX General; each image picks one that has the glyph), in that font designer's proportions:
a ring a tenth of its radius thick before the stroke this renderer adds (0.03-0.1 of the radius on each side), a
diamond as wide as it is tall, a heavy Greek cross, a star whose points differ by font. FreeType draws it at a
160 px font size (its ink 84-173 px across, by glyph and font); the ink is cropped and resized to the asked width
with a Lanczos filter (down by up to nine times at a tenth of the frame; the world resizes bicubically), turned by up to 8 degrees, and laid on a linear gradient of the background's colour with fine grain
(no other renderer's blotches, stripes, speckle or lighting), blurred a little and saved as JPEG at quality 55-90.

Written, and its ranges fixed, with the shipped demo models already trained: nothing was trained after it (issue 22,
a blind probe for when a training change is shaped by the others).
"""

from __future__ import annotations

import io
import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GLYPHS = {"circle": "\u25cf", "square": "\u25a0", "triangle": "\u25b2", "star": "\u2605", "cross": "\u271a",
          "ring": "\u25cb", "diamond": "\u25c6", "heart": "\u2665"}
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf")
_SIZE = 160  # the font size the glyph is rasterised at, before its ink is resized to the asked width


def _font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


@lru_cache(maxsize=None)
def fonts_with(shape: str) -> tuple[str, ...]:
    """The fonts in ``FONTS`` whose character map has the shape's glyph (STIX General has no heavy cross)."""
    from fontTools.ttLib import TTFont

    return tuple(f for f in FONTS if ord(GLYPHS[shape]) in TTFont(_font_path(f), lazy=True).getBestCmap())


def _glyph_mask(shape: str, font: str, stroke: float) -> Image.Image:
    """The glyph's coverage at ``_SIZE`` px (a stroke of ``stroke`` × its half-extent added), cropped to its ink."""
    f = ImageFont.truetype(_font_path(font), _SIZE)
    canvas = Image.new("L", (_SIZE * 3, _SIZE * 3), 0)
    d = ImageDraw.Draw(canvas)
    d.text((_SIZE, _SIZE), GLYPHS[shape], font=f, fill=255)
    if stroke:
        x0, y0, x1, y1 = canvas.getbbox()
        half = max(x1 - x0, y1 - y0) / 2
        canvas = Image.new("L", canvas.size, 0)
        ImageDraw.Draw(canvas).text((_SIZE, _SIZE), GLYPHS[shape], font=f, fill=255, stroke_width=max(1, round(stroke * half)), stroke_fill=255)
    return canvas.crop(canvas.getbbox())


def draw_glyph(scene, rng: np.random.Generator, width: float, side: int = 192, tilt: float = 8.0) -> Image.Image:
    """The scene's one object, centred, its unturned ink box ``width`` of the frame on its longer side; a decoded JPEG."""
    from caption_assets.world.scene import COLOURS

    o = scene.objects[0]
    jitter = lambda rgb: np.clip(np.array(rgb, float) + rng.integers(-20, 21, 3), 0, 255)  # noqa: E731
    options = fonts_with(o.shape)
    font = options[int(rng.integers(len(options)))]
    mask = _glyph_mask(o.shape, font, rng.uniform(0.03, 0.1) if o.shape == "ring" else 0.0)
    k = width * side / max(mask.size)
    mask = mask.resize((max(1, round(mask.width * k)), max(1, round(mask.height * k))), Image.Resampling.LANCZOS)
    layer = Image.new("L", (side, side), 0)
    cx, cy = (0.5 + rng.uniform(-0.02, 0.02, 2)) * side
    layer.paste(mask, (round(cx - mask.width / 2), round(cy - mask.height / 2)))
    layer = layer.rotate(float(rng.uniform(-tilt, tilt)), resample=Image.Resampling.BICUBIC, center=(cx, cy))
    cover = np.asarray(layer, dtype=np.float64)[..., None] / 255
    py, px = np.mgrid[0:side, 0:side] / side - 0.5
    a = rng.uniform(0, 2 * np.pi)
    ramp = (px * np.cos(a) + py * np.sin(a))[..., None] * rng.uniform(20, 40)  # a shade ±10-20 across the frame
    bg = jitter(COLOURS[scene.background]) + ramp
    im = bg * (1 - cover) + jitter(COLOURS[o.colour]) * cover + rng.normal(0, 3, (side, side, 1))
    im = Image.fromarray(np.clip(np.rint(im), 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(55, 91)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
