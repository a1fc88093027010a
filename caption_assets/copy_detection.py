"""Copy detection in two stages: candidate hashes, then verification by geometric alignment (pure).

A *copy* is the same picture again after a re-encode, a rescale, a crop to ~90% or a shift of ~5%.
Whole-frame pHash cannot find crops and shifts (a 4% shift moves every DCT coefficient) and merges
distinct simple scenes (they share low frequencies), so it is only one of the candidate sources here:

- **Candidates** are 64-bit hashes looked up in the duplicate index's B-tree bands: family 0 is the
  full-frame pHash within 4 bits (re-encodes, resizes); the centre family hashes the image's centre
  window (stored once per image) and a query probes that window moved by up to 5% and scaled by ±8%
  (75 windows: crops and shifts), within 8 bits. The thumbnail is blurred (sigma 1 px) before the
  windows are sampled: textures otherwise alias into the low DCT frequencies and their hashes drift
  by 6-14 bits under a 1% residual shift. The query grid is symmetric, so an image finds its copies
  whichever of the two came first.
- **Verification** aligns the two stored thumbnails (a small grey frame and a coarse colour one):
  it searches a relative scale (0.86-1.16) and estimates the shift by phase correlation at each,
  warps one onto the other and accepts only when the aligned overlap covers most of the smaller image
  and agrees cell by cell (so distinct scenes that show the same objects elsewhere, or one scene
  with an object moved or changed, are rejected). Flat images (no texture to align on) never get a
  ``copy`` verdict; only identical bytes mark them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.fft import dctn, fft2, ifft2
from scipy.ndimage import gaussian_filter, map_coordinates, uniform_filter

THUMB = 64  # grey thumbnail's long side, pixels
CHROMA = 16  # colour thumbnail's long side
FLAT_STD = 3.0  # grey levels: below this the thumbnail has nothing to align on
SCALES = np.exp(np.linspace(np.log(0.84), np.log(1.19), 7))  # relative scale hypotheses (B pixel -> A pixel)
MAX_SHIFT = 0.16  # of the side: crops off centre plus shifts
MIN_OVERLAP = 0.8  # aligned overlap / the smaller image's area
BORDER = 0.07  # of the side, left out of the agreement test (wrapped or cut borders)
CELL = 8  # pixels of the grey thumbnail per agreement cell
CELL_ABS = 6.0  # grey levels a flat cell may differ by on average
CELL_REL = 0.52  # share of the cell's own contrast a textured cell may differ by
CHROMA_ABS = 8.0  # Cb/Cr levels a colour cell may differ by
VERSION = 1


@dataclass(frozen=True, slots=True)
class Thumb:
    grey: np.ndarray  # (h, w) float32, long side THUMB
    chroma: np.ndarray  # (2, h', w') float32 Cb, Cr, long side CHROMA

    @property
    def flat(self) -> bool:
        return float(self.grey.std()) < FLAT_STD


@dataclass(frozen=True, slots=True)
class Alignment:
    """How copy B sits on A: ``x_A = scale * x_B + (dx, dy)`` in A's thumbnail (shift as a fraction of A's side)."""

    scale: float
    dx: float
    dy: float
    overlap: float  # aligned overlap / the smaller image's area
    score: float  # worst cell's residual as a share of what the cell may differ by (< 1: every cell agrees)
    accepted: bool


# ------------------------------------------------------------------------------------------ thumbnails


def make_thumb(im: Image.Image) -> bytes:
    """The stored form: a grey thumbnail (long side 64) and a Cb/Cr one (long side 16), zlib-packed."""
    w, h = im.size
    factor = max(1, min(w, h) // (2 * THUMB))
    small = im.convert("RGB").reduce(factor) if factor > 1 else im.convert("RGB")
    ycc = small.convert("YCbCr")
    gw, gh = _fit(w, h, THUMB)
    cw, ch = _fit(w, h, CHROMA)
    grey = np.asarray(ycc.getchannel(0).resize((gw, gh), Image.Resampling.BOX), dtype=np.uint8)
    chroma = np.stack([np.asarray(ycc.getchannel(c).resize((cw, ch), Image.Resampling.BOX), dtype=np.uint8) for c in (1, 2)])
    head = struct.pack("<BBBBB", VERSION, gw, gh, cw, ch)
    return zlib.compress(head + grey.tobytes() + chroma.tobytes(), 1)


def read_thumb(blob: bytes | None) -> Thumb | None:
    """The stored thumbnail, or None when it is missing or does not parse (no verdict, never a crash)."""
    if not blob:
        return None
    try:
        raw = zlib.decompress(blob)
        version, gw, gh, cw, ch = struct.unpack("<BBBBB", raw[:5])
        if version != VERSION or len(raw) != 5 + gw * gh + 2 * cw * ch or min(gw, gh, cw, ch) < 1:
            return None
        grey = np.frombuffer(raw, np.uint8, gw * gh, 5).reshape(gh, gw).astype(np.float32)
        chroma = np.frombuffer(raw, np.uint8, 2 * cw * ch, 5 + gw * gh).reshape(2, ch, cw).astype(np.float32)
        return Thumb(grey, chroma)
    except (zlib.error, struct.error, ValueError):
        return None


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    if w >= h:
        return side, max(1, round(h * side / w))
    return max(1, round(w * side / h)), side


# ------------------------------------------------------------------------------------------ candidate hashes

WINDOW = 0.8  # the stored centre window, as a share of each side
QUERY_SHIFTS = (-0.05, -0.025, 0.0, 0.025, 0.05)
QUERY_SCALES = (0.92, 1.0, 1 / 0.92)  # a finer scale grid adds probes, not recall, once the thumbnail is blurred
BLUR = 1.0  # thumbnail pixels: an anti-alias blur before sampling windows (textures alias into the low frequencies)
CENTRE_FAMILY = 2  # band family of the centre-window hash (family 1 was the unblurred hash of index version 1)
CENTRE_DISTANCE = 8  # bits: a candidate window hash within this of a stored one (verification decides)
HASH_VERSION = 2  # stored centre hashes change with this: an older index rebuilds its centre rows on open


def _dct_hashes(stack: np.ndarray) -> list[int]:
    """pHash of each (n, 32, 32) window: the 8x8 low DCT block against its median, as signed 64-bit ints."""
    low = dctn(stack, axes=(1, 2), norm=None)[:, :8, :8].reshape(len(stack), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">i8").ravel().astype(np.int64).tolist()


def _dct_hash(pixels: np.ndarray) -> int:
    return _dct_hashes(pixels[None])[0]


def _windows(grey: np.ndarray, size: np.ndarray, cx: np.ndarray, cy: np.ndarray, out: int = 32) -> np.ndarray:
    """``grey`` sampled on an out x out grid over each window of relative ``size`` centred at (cx, cy): (n, out, out)."""
    h, w = grey.shape
    step = (np.arange(out) + 0.5) / out
    ys = (cy[:, None] + (step[None, :] - 0.5) * size[:, None]) * h - 0.5
    xs = (cx[:, None] + (step[None, :] - 0.5) * size[:, None]) * w - 0.5
    yy = np.broadcast_to(ys[:, :, None], (len(size), out, out))
    xx = np.broadcast_to(xs[:, None, :], (len(size), out, out))
    return map_coordinates(grey, [yy, xx], order=1, mode="nearest")


def _window(grey: np.ndarray, size: float, cx: float, cy: float, out: int = 32) -> np.ndarray:
    return _windows(grey, np.array([size]), np.array([cx]), np.array([cy]), out)[0]


def _blurred(t: Thumb) -> np.ndarray:
    return gaussian_filter(t.grey, BLUR, mode="nearest")


def stored_hashes(t: Thumb) -> list[int]:
    """Hashes an image is indexed under: the full frame and the blurred centre window."""
    return [_dct_hash(_window(t.grey, 1.0, 0.5, 0.5)), _dct_hash(_window(_blurred(t), WINDOW, 0.5, 0.5))]


def query_hashes(t: Thumb) -> list[tuple[int, int]]:
    """(family, hash) an image probes the index with: the full frame (family 0) and the blurred centre window
    moved and scaled over the query grid (``CENTRE_FAMILY``), all windows sampled and hashed in one batch."""
    s, dy, dx = (a.ravel() for a in np.meshgrid(QUERY_SCALES, QUERY_SHIFTS, QUERY_SHIFTS, indexing="ij"))
    centre = _dct_hashes(_windows(_blurred(t), WINDOW * s, 0.5 + dx, 0.5 + dy))
    out = [(0, _dct_hash(_window(t.grey, 1.0, 0.5, 0.5)))] + [(CENTRE_FAMILY, h) for h in centre]
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------ verification


@lru_cache(maxsize=64)
def _hann(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


@lru_cache(maxsize=64)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


@lru_cache(maxsize=64)
def _allowed(h: int, w: int) -> np.ndarray:
    """Shifts (circular FFT indices) within MAX_SHIFT of the side."""
    ly, lx = int(MAX_SHIFT * h) + 1, int(MAX_SHIFT * w) + 1
    out = np.zeros((h, w), dtype=bool)
    out[np.r_[0:ly + 1, h - ly:h][:, None], np.r_[0:lx + 1, w - lx:w][None, :]] = True
    return out


def _resample(img: np.ndarray, scale: float, shape: tuple[int, int], dx: float = 0.0, dy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``img`` (B) drawn in A's frame of ``shape`` under x_A = scale * x_B + d: (pixels, inside-B mask)."""
    yy, xx = _grid(*shape)
    by, bx = (yy - dy) / scale, (xx - dx) / scale
    inside = (by >= 0) & (by <= img.shape[0] - 1) & (bx >= 0) & (bx <= img.shape[1] - 1)
    return map_coordinates(img, [by, bx], order=1, mode="nearest", prefilter=False), inside


def _phase_shift(fa: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Shift (dy, dx) moving b onto the image whose spectrum is ``fa``, within MAX_SHIFT: (dy, dx, peak)."""
    cross = fa * np.conj(fft2(b))
    corr = np.real(ifft2(cross / (np.abs(cross) + 1e-6)))
    h, w = corr.shape
    corr = np.where(_allowed(h, w), corr, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[iy, ix])

    def sub(c_m: float, c_0: float, c_p: float) -> float:  # sub-pixel: a parabola through the peak's neighbours
        d = c_m - 2 * c_0 + c_p
        return 0.0 if not np.isfinite(d) or d >= 0 else 0.5 * (c_m - c_p) / d

    oy = sub(corr[(iy - 1) % h, ix], peak, corr[(iy + 1) % h, ix])
    ox = sub(corr[iy, (ix - 1) % w], peak, corr[iy, (ix + 1) % w])
    dy = iy + oy if iy <= h // 2 else iy + oy - h
    dx = ix + ox if ix <= w // 2 else ix + ox - w
    return float(dy), float(dx), peak


def _best_shift(fa: np.ndarray, ga: np.ndarray, gb: np.ndarray, s: float) -> tuple[float, float, float]:
    """Phase-correlation peak and shift (dy, dx) for B scaled by ``s`` about its centre onto A's centre."""
    h, w = ga.shape
    c_dy, c_dx = (h - 1) / 2 - s * (gb.shape[0] - 1) / 2, (w - 1) / 2 - s * (gb.shape[1] - 1) / 2
    bs, _ = _resample(gb, s, (h, w), c_dx, c_dy)
    dy, dx, peak = _phase_shift(fa, bs * _hann(h, w))
    return peak, c_dy + dy, c_dx + dx


def align(a: Thumb, b: Thumb) -> tuple[float, float, float]:
    """Best (scale, dy, dx) in A's grey-thumbnail pixels: a scale grid refined by a parabola through the
    best grid point and its neighbours, the shift by phase correlation at each scale."""
    ga, gb = a.grey - a.grey.mean(), b.grey - b.grey.mean()
    fa = fft2(ga * _hann(*ga.shape))
    peaks = np.array([_best_shift(fa, ga, gb, float(s))[0] for s in SCALES])
    i = int(np.clip(np.argmax(peaks), 1, len(SCALES) - 2))
    p_m, p_0, p_p = peaks[i - 1], peaks[i], peaks[i + 1]
    d = p_m - 2 * p_0 + p_p
    off = 0.0 if d >= 0 else float(np.clip(0.5 * (p_m - p_p) / d, -1, 1))
    log_s = np.log(SCALES)
    scale = float(np.exp(log_s[i] + off * (log_s[1] - log_s[0])))
    _, dy, dx = _best_shift(fa, ga, gb, scale)
    return scale, dy, dx


def verify(a: Thumb | None, b: Thumb | None) -> Alignment | None:
    """Is B a copy of A (or A of B)? The alignment with its evidence, or None when it cannot be judged."""
    if a is None or b is None or a.flat or b.flat:
        return None
    ra, rb = a.grey.shape[1] / a.grey.shape[0], b.grey.shape[1] / b.grey.shape[0]
    if abs(np.log(ra / rb)) > 0.25:
        return Alignment(1.0, 0.0, 0.0, 0.0, np.inf, False)
    scale, dy, dx = align(a, b)
    h, w = a.grey.shape
    bw, inside = _resample(b.grey, scale, (h, w), dx, dy)
    smaller = min(h * w, b.grey.size * scale * scale)
    overlap = float(inside.sum()) / smaller
    score = np.inf
    if overlap >= MIN_OVERLAP:
        score = _agreement(a, b, bw, inside, scale, dx, dy)
    return Alignment(scale, dx / w, dy / h, min(overlap, 1.0), float(score), bool(overlap >= MIN_OVERLAP and score < 1.0))


def _agreement(a: Thumb, b: Thumb, bw: np.ndarray, inside: np.ndarray, scale: float, dx: float, dy: float) -> float:
    """Worst cell's residual over what it may differ by (grey and colour); < 1 when every cell agrees."""
    h, w = a.grey.shape
    m = int(round(BORDER * max(h, w)))
    core = inside.copy()
    # leave out a band along the edges of both frames: cut or wrapped borders of a crop or shift
    core[:m, :] = core[-m:, :] = False
    core[:, :m] = core[:, -m:] = False
    _, inside_core = _resample(np.zeros((max(1, b.grey.shape[0] - 2 * m), max(1, b.grey.shape[1] - 2 * m)), np.float32), scale, (h, w), dx + scale * m, dy + scale * m)
    core &= inside_core
    if core.sum() < 0.3 * core.size:
        return np.inf
    resid = np.abs(a.grey - bw)
    # per cell: mean residual and the cell's own contrast (mean absolute deviation), over core pixels only
    ch, cw = h // CELL, w // CELL
    def cells(x: np.ndarray) -> np.ndarray:
        return x[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).sum(axis=(1, 3))
    n = cells(core.astype(np.float32))
    ok = n >= CELL * CELL / 2
    if not ok.any():
        return np.inf
    e = cells(resid * core) / np.maximum(n, 1)
    gy, gx = np.gradient(a.grey)
    contrast = cells((np.abs(gx) + np.abs(gy)) * core) / np.maximum(n, 1)  # what a sub-pixel misalignment costs
    allowed = CELL_ABS + CELL_REL * contrast
    grey_score = float((e[ok] / allowed[ok]).max())
    # colour: B's chroma in A's chroma frame under the same alignment (thumbnail scale ratio folded in)
    ca, cb = a.chroma, b.chroma
    fa = ca.shape[2] / w
    fb = cb.shape[2] / b.grey.shape[1]
    cscale = scale * fa / fb
    worst = 0.0
    for c in range(2):
        bwc, ins = _resample(cb[c], cscale, ca.shape[1:], dx * fa, dy * fa)
        mc = int(np.ceil(BORDER * max(ca.shape[1:]))) + 1
        ins[:mc, :] = ins[-mc:, :] = False
        ins[:, :mc] = ins[:, -mc:] = False
        if ins.sum() < 4:
            continue
        gy, gx = np.gradient(ca[c])
        allowed = CHROMA_ABS + CELL_REL * (np.abs(gx) + np.abs(gy))
        norm = np.maximum(uniform_filter(ins.astype(np.float32), 3), 1e-6)
        diff = uniform_filter(np.abs(ca[c] - bwc) * ins, 3) / norm
        worst = max(worst, float((diff / uniform_filter(allowed, 3))[ins].max()))
    return max(grey_score, worst)
