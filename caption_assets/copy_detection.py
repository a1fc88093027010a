"""Copy detection in two stages: candidate hashes, then verification by geometric alignment (pure).

A *copy* is the same picture again after a re-encode, a rescale, a crop to ~90% or a shift of ~5%.
Whole-frame pHash cannot find crops and shifts (a 4% shift moves every DCT coefficient) and merges
distinct simple scenes (they share low frequencies), so it is only one of the candidate sources here:

- **Candidates** are 64-bit hashes looked up in the duplicate index's B-tree bands: family 0 is the
  full-frame pHash within 4 bits (re-encodes, resizes); the centre family hashes the image's centre
  window, stored at four offsets of ±1.25% (so the query grid's 2.5% steps leave at most 0.6% to
  drift), and a query probes that window moved by up to 5% and scaled by ±8% (75 windows: crops and
  shifts), within 8 bits. The thumbnail is blurred (sigma 1 px) before the
  windows are sampled: textures otherwise alias into the low DCT frequencies and their hashes drift
  by 6-14 bits under a 1% residual shift. The query grid is symmetric, so an image finds its copies
  whichever of the two came first.
- **Verification** aligns the two stored thumbnails (a small grey frame and a coarse colour one):
  it searches a relative scale (0.86-1.16) and estimates the shift by phase correlation at each,
  warps one onto the other and accepts only when the aligned overlap covers most of the smaller image
  and agrees cell by cell (so distinct scenes that show the same objects elsewhere, or one scene
  with an object moved or changed, are rejected). Two tests per cell: the residual against what a
  sub-pixel misalignment of the cell's contrast could cost, and a *range* test (each pixel against
  the other image's values within a pixel of where it lands, both ways), which a copy passes at any
  contrast and which catches what contrast hides: a diamond drawn where the copy has a star, one
  object a size larger, or the same scene rendered again in slightly other shades. Last, each flat region
  (the background, an object's inside) must keep its shade: the median difference over it stays within
  what two JPEG encodes can move a flat mean (``SHADE_BIAS``), so a render in shades a few levels apart,
  which the per-cell tests must let through as noise, is not a copy.
- An image whose luma is flat but whose colours are not (equal-luma colours) hashes and aligns on its
  colour axis instead (``make_thumb``). Images flat in both (no structure to align on) never get a
  ``copy`` verdict; only identical bytes mark them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.fft import dctn, fft2, ifft2
from scipy.ndimage import gaussian_filter, label, map_coordinates, maximum_filter, minimum_filter, uniform_filter

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
GAP_GREY = 3.0  # grey levels a cell's pixels may lie, on average, outside the other image's local range
GAP_REL = 0.1  # plus this share of the cell's contrast (sub-pixel box sampling of fine texture)
GAP_CHROMA = 4.0  # the same for a colour pixel's 3 x 3 neighbourhood, in Cb/Cr levels
SHADE_FLAT = 4.0  # levels: a pixel whose neighbourhood (5 x 5 grey, 3 x 3 colour) spans no more is inside a flat region
SHADE_MIN = (12, 4)  # pixels a flat region needs (grey, colour) for its shade to be compared
SHADE_BIAS = 2.5  # levels a flat region's median difference may reach: two JPEG encodes (<= 1 each) and rounding
VERSION = 1  # header byte of a thumbnail whose grey channel is luma
VERSION_BY_COLOUR = 2  # ... and of one whose grey channel is the colour axis (luma-flat images)


@dataclass(frozen=True, slots=True)
class Thumb:
    grey: np.ndarray  # (h, w) float32, long side THUMB: luma, or for a luma-flat image its colour axis (``by_colour``)
    chroma: np.ndarray  # (2, h', w') float32 Cb, Cr, long side CHROMA
    by_colour: bool = False  # ``grey`` is the projection of Cb/Cr on their principal axis (the luma had no structure)

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
    score: float  # worst test's share of what it allows (cell residuals, ranges, flat regions' shade; < 1: all agree)
    accepted: bool


# ------------------------------------------------------------------------------------------ thumbnails


def make_thumb(im: Image.Image) -> bytes:
    """The stored form: a grey thumbnail (long side 64) and a Cb/Cr one (long side 16), zlib-packed.

    Two colours of equal luma (a red shape on purple, a blue one on red) leave the luma flat, with nothing to hash
    or align on; such an image's grey channel is its colour axis instead: Cb/Cr projected on their principal
    axis, with a fixed sign. A copy has the same colours, so it gets the same axis and the same kind of thumbnail."""
    w, h = im.size
    factor = max(1, min(w, h) // (2 * THUMB))
    small = im.convert("RGB").reduce(factor) if factor > 1 else im.convert("RGB")
    ycc = small.convert("YCbCr")
    gw, gh = _fit(w, h, THUMB)
    cw, ch = _fit(w, h, CHROMA)
    grey = np.asarray(ycc.getchannel(0).resize((gw, gh), Image.Resampling.BOX), dtype=np.uint8)
    version = VERSION
    if grey.std() < FLAT_STD:
        cbcr = np.stack([np.asarray(ycc.getchannel(c).resize((gw, gh), Image.Resampling.BOX), dtype=np.float32) for c in (1, 2)])
        projected = colour_axis(cbcr)
        if projected.std() >= FLAT_STD:
            grey, version = np.clip(np.round(projected), 0, 255).astype(np.uint8), VERSION_BY_COLOUR
    chroma = np.stack([np.asarray(ycc.getchannel(c).resize((cw, ch), Image.Resampling.BOX), dtype=np.uint8) for c in (1, 2)])
    head = struct.pack("<BBBBB", version, gw, gh, cw, ch)
    return zlib.compress(head + grey.tobytes() + chroma.tobytes(), 1)


def colour_axis(cbcr: np.ndarray) -> np.ndarray:
    """(2, h, w) Cb/Cr -> (h, w): 128 + each pixel's offset from the mean colour along the principal colour axis,
    signed so that the axis' larger component is positive (the same axis, and sign, for every copy)."""
    flat = cbcr.reshape(2, -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(centred @ centred.T)
    axis = vectors[:, -1]
    axis = axis * np.sign(axis[np.argmax(np.abs(axis))])
    return (128 + axis @ centred).reshape(cbcr.shape[1:])


def read_thumb(blob: bytes | None) -> Thumb | None:
    """The stored thumbnail, or None when it is missing or does not parse (no verdict, never a crash)."""
    if not blob:
        return None
    try:
        raw = zlib.decompress(blob)
        version, gw, gh, cw, ch = struct.unpack("<BBBBB", raw[:5])
        if version not in (VERSION, VERSION_BY_COLOUR) or len(raw) != 5 + gw * gh + 2 * cw * ch or min(gw, gh, cw, ch) < 1:
            return None
        grey = np.frombuffer(raw, np.uint8, gw * gh, 5).reshape(gh, gw).astype(np.float32)
        chroma = np.frombuffer(raw, np.uint8, 2 * cw * ch, 5 + gw * gh).reshape(2, ch, cw).astype(np.float32)
        return Thumb(grey, chroma, version == VERSION_BY_COLOUR)
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
STORE_OFFSETS = ((-0.0125, -0.0125), (-0.0125, 0.0125), (0.0125, -0.0125), (0.0125, 0.0125))  # (dy, dx) of the stored centre windows
HASH_VERSION = 3  # stored centre hashes change with this: an older index rebuilds its centre rows on open


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
    """Hashes an image is indexed under: the full frame, then the blurred centre window at each of ``STORE_OFFSETS``
    (halving the grid a query's windows must land on: a shift between two grid points costs 6-12 bits on simple scenes)."""
    off = np.array(STORE_OFFSETS)
    centre = _dct_hashes(_windows(_blurred(t), np.full(len(off), WINDOW), 0.5 + off[:, 1], 0.5 + off[:, 0]))
    return [_dct_hash(_window(t.grey, 1.0, 0.5, 0.5)), *dict.fromkeys(centre)]


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


def _inside(shape_b: tuple[int, int], scale: float, shape: tuple[int, int], dx: float = 0.0, dy: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B's coordinates (by, bx) at each pixel of A's frame of ``shape`` under x_A = scale * x_B + d, and the inside-B mask."""
    yy, xx = _grid(*shape)
    by, bx = (yy - dy) / scale, (xx - dx) / scale
    return by, bx, (by >= 0) & (by <= shape_b[0] - 1) & (bx >= 0) & (bx <= shape_b[1] - 1)


def _resample(img: np.ndarray, scale: float, shape: tuple[int, int], dx: float = 0.0, dy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``img`` (B) drawn in A's frame of ``shape`` under x_A = scale * x_B + d: (pixels, inside-B mask)."""
    by, bx, inside = _inside(img.shape, scale, shape, dx, dy)
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


def _spectrum(grey: np.ndarray) -> np.ndarray:
    """A's side of the phase correlation: the spectrum of its mean-free, Hann-windowed grey thumbnail."""
    return fft2((grey - grey.mean()) * _hann(*grey.shape))


def _grid_spectra(gb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """B's side at every grid scale: mean-free ``gb`` scaled about its centre onto A's frame of ``shape``, windowed,
    transformed; (len(SCALES), h, w). It depends on A only through the shape, so it is computed once per B."""
    h, w = shape
    out = []
    for s in SCALES:
        s = float(s)
        c_dy, c_dx = (h - 1) / 2 - s * (gb.shape[0] - 1) / 2, (w - 1) / 2 - s * (gb.shape[1] - 1) / 2
        bs, _ = _resample(gb, s, (h, w), c_dx, c_dy)
        out.append(fft2(bs * _hann(h, w)))
    return np.stack(out)


def _grid_peaks(fa: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Phase-correlation peak (within MAX_SHIFT) at every grid scale, in one batch: the same values ``_best_shift`` gives."""
    cross = fa[None] * np.conj(grid)
    corr = np.real(ifft2(cross / (np.abs(cross) + 1e-6), axes=(-2, -1)))
    h, w = fa.shape
    return np.where(_allowed(h, w)[None], corr, -np.inf).reshape(len(grid), -1).max(axis=1).astype(np.float64)  # as floats, like _best_shift's


def align(a: Thumb, b: Thumb) -> tuple[float, float, float]:
    """Best (scale, dy, dx) in A's grey-thumbnail pixels: a scale grid refined by a parabola through the
    best grid point and its neighbours, the shift by phase correlation at each scale."""
    gb = b.grey - b.grey.mean()
    return _align(a, b, _spectrum(a.grey), _grid_spectra(gb, a.grey.shape))


def _align(a: Thumb, b: Thumb, fa: np.ndarray, grid: np.ndarray) -> tuple[float, float, float]:
    ga, gb = a.grey - a.grey.mean(), b.grey - b.grey.mean()
    peaks = _grid_peaks(fa, grid)
    i = int(np.clip(np.argmax(peaks), 1, len(SCALES) - 2))
    p_m, p_0, p_p = peaks[i - 1], peaks[i], peaks[i + 1]
    d = p_m - 2 * p_0 + p_p
    off = 0.0 if d >= 0 else float(np.clip(0.5 * (p_m - p_p) / d, -1, 1))
    log_s = np.log(SCALES)
    scale = float(np.exp(log_s[i] + off * (log_s[1] - log_s[0])))
    _, dy, dx = _best_shift(fa, ga, gb, scale)
    return scale, dy, dx


def _frames_differ(a: Thumb, b: Thumb) -> bool:
    """Different frames (or different kinds of grey channel): never a copy, and not worth aligning."""
    ra, rb = a.grey.shape[1] / a.grey.shape[0], b.grey.shape[1] / b.grey.shape[0]
    return bool(abs(np.log(ra / rb)) > 0.25) or a.by_colour != b.by_colour


def verify(a: Thumb | None, b: Thumb | None) -> Alignment | None:
    """Is B a copy of A (or A of B)? The alignment with its evidence, or None when it cannot be judged."""
    if a is None or b is None or a.flat or b.flat:
        return None
    if _frames_differ(a, b):
        return Alignment(1.0, 0.0, 0.0, 0.0, np.inf, False)
    return _verify(a, b, _spectrum(a.grey), _grid_spectra(b.grey - b.grey.mean(), a.grey.shape))


def _verify(a: Thumb, b: Thumb, fa: np.ndarray, grid: np.ndarray, a_side: _ASide | None = None) -> Alignment:
    """``verify`` past its cheap checks, with A's spectrum and B's grid spectra given. With ``a_side`` (A's cached
    gradients) a pair whose grey cells already disagree skips the colour test: its score is then only the grey
    one, still >= 1, so the verdict is the same."""
    scale, dy, dx = _align(a, b, fa, grid)
    h, w = a.grey.shape
    bw, inside = _resample(b.grey, scale, (h, w), dx, dy)
    smaller = min(h * w, b.grey.size * scale * scale)
    overlap = float(inside.sum()) / smaller
    score = np.inf
    if overlap >= MIN_OVERLAP:
        score = _agreement(a, b, bw, inside, scale, dx, dy, a_side)
    return Alignment(scale, dx / w, dy / h, min(overlap, 1.0), float(score), bool(overlap >= MIN_OVERLAP and score < 1.0))


def _agreement(a: Thumb, b: Thumb, bw: np.ndarray, inside: np.ndarray, scale: float, dx: float, dy: float,
               a_side: _ASide | None = None) -> float:
    """Worst cell's residual over what it may differ by (grey and colour), and flat regions' shade offsets over
    theirs; < 1 when everything agrees."""
    h, w = a.grey.shape
    m = int(round(BORDER * max(h, w)))
    core = inside.copy()
    # leave out a band along the edges of both frames: cut or wrapped borders of a crop or shift
    core[:m, :] = core[-m:, :] = False
    core[:, :m] = core[:, -m:] = False
    _, _, inside_core = _inside((max(1, b.grey.shape[0] - 2 * m), max(1, b.grey.shape[1] - 2 * m)), scale, (h, w), dx + scale * m, dy + scale * m)
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
    grad = _grad(a.grey) if a_side is None else a_side.grad
    contrast = cells(grad * core) / np.maximum(n, 1)  # what a sub-pixel misalignment costs
    allowed = CELL_ABS + CELL_REL * contrast
    grey_score = float((e[ok] / allowed[ok]).max())
    if a_side is not None and grey_score >= 1.0:
        return grey_score  # rejected whatever the rest says
    # range test: each pixel against the other image's values within a pixel of where it lands (and back). Sub-pixel
    # misalignment, resampling and re-encoding keep a copy's pixels inside that range; a changed object, a shade of
    # another render or a moved edge leaves it, however strong the edge is (the test above scales with contrast).
    lo, _ = _resample(minimum_filter(b.grey, 3), scale, (h, w), dx, dy)
    hi, _ = _resample(maximum_filter(b.grey, 3), scale, (h, w), dx, dy)
    gap = _gap(a.grey, bw, lo, hi)
    range_score = float((cells(gap * core)[ok] / n[ok] / (GAP_GREY + GAP_REL * contrast[ok])).max())
    if a_side is not None and range_score >= 1.0:
        return max(grey_score, range_score)
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
        allowed = CHROMA_ABS + CELL_REL * _grad(ca[c])
        norm = np.maximum(uniform_filter(ins.astype(np.float32), 3), 1e-6)
        diff = uniform_filter(np.abs(ca[c] - bwc) * ins, 3) / norm
        worst = max(worst, float((diff / uniform_filter(allowed, 3))[ins].max()))
        lo, _ = _resample(minimum_filter(cb[c], 3), cscale, ca.shape[1:], dx * fa, dy * fa)
        hi, _ = _resample(maximum_filter(cb[c], 3), cscale, ca.shape[1:], dx * fa, dy * fa)
        cgap = uniform_filter(_gap(ca[c], bwc, lo, hi) * ins, 3) / norm
        worst = max(worst, float(cgap[ins].max()) / GAP_CHROMA)
        worst = max(worst, _shade_bias(ca[c], bwc, ins, 3, SHADE_MIN[1]) / SHADE_BIAS)
    return max(grey_score, range_score, worst, _shade_bias(a.grey, bw, core, 5, SHADE_MIN[0]) / SHADE_BIAS)


def _shade_bias(a: np.ndarray, bw: np.ndarray, mask: np.ndarray, size: int, min_pixels: int) -> float:
    """The largest |median(A - B)| over A's flat regions (connected pixels whose ``size`` x ``size`` neighbourhood is
    flat). A copy keeps every region's shade (a re-encode moves a flat mean by a level at most, a rescale not at all),
    while the world's semantic twins, one description rendered again, differ by a few levels in the background or in
    one object: within what the per-cell tests must allow for edges and noise, but not a consistent offset."""
    flat = (maximum_filter(a, size) - minimum_filter(a, size) <= SHADE_FLAT) & mask
    labels, n = label(flat)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = (counts >= min_pixels) & (np.arange(n + 1) > 0)
    inside = keep[labels]
    if not inside.any():
        return 0.0
    lab, d = labels[inside], (a - bw)[inside]
    d = d[np.lexsort((d, lab))]  # each region's differences, sorted, one region after another
    sizes = counts[keep]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    medians = 0.5 * (d[starts + (sizes - 1) // 2] + d[starts + sizes // 2])
    return float(np.abs(medians).max())


def _gap(a: np.ndarray, bw: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per pixel: how far A lies outside B's local range (``lo``..``hi``, B's 3 x 3 min and max drawn in A's frame), or
    B outside A's own 3 x 3 range, whichever is further. Interpolated ranges still bound the pixels they came from."""
    out_a = np.maximum(np.maximum(lo - a, a - hi), 0)
    out_b = np.maximum(np.maximum(minimum_filter(a, 3) - bw, bw - maximum_filter(a, 3)), 0)
    return np.maximum(out_a, out_b)


def _grad(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(x)
    return np.abs(gx) + np.abs(gy)


# ------------------------------------------------------------------------------------------ many pairs
#
# The index verifies every candidate pair, and in a crawl of simple scenes (the world's shapes on plain
# backgrounds) an image has a candidate in ~1.5% of the indexed images: tens to hundreds of pairs per image,
# nearly all of them distinct scenes. ``PairVerifier`` gives the same verdicts as ``verify`` for far less:
# per-image work is done once (decoding, gradients, B's spectra at the grid scales), and a pair is first
# tested against a *bound*: whatever alignment the search could return (scale within the grid's range,
# shift within MAX_SHIFT of centred), some region of A always lies inside B, away from both borders, and
# each pixel there can only be compared with B's pixels in a known box. When A's value at such a pixel is
# further from every value in its box than the agreement test allows (grey cells of 8 x 8, or a colour
# pixel's 3 x 3 neighbourhood), no alignment can be accepted and the pair is rejected without aligning.
# The bound only ever rejects pairs ``verify`` rejects (a margin covers rounding); accepted pairs get
# exactly ``verify``'s alignment.

BOUND_MARGIN = 1e-3  # relative and absolute slack of the bound's test against the agreement thresholds


@dataclass(frozen=True, slots=True)
class _ASide:
    grad: np.ndarray  # grey |gx| + |gy|
    chroma_allowed: np.ndarray  # (2, h', w') the colour test's 3 x 3 allowed difference


def _a_side(t: Thumb) -> _ASide:
    return _ASide(_grad(t.grey), np.stack([uniform_filter(CHROMA_ABS + CELL_REL * _grad(t.chroma[c]), 3) for c in range(2)]))


@lru_cache(maxsize=256)
def _reach(n: int, ratio_a: float, n_a: int, n_b: int, ratio_b: float, n_raster_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis of an A raster of ``n`` pixels (``ratio_a`` raster pixels per grey pixel of A, whose
    grey side is ``n_a``): the first and last B raster pixel (``ratio_b``, grey side ``n_b``, raster side
    ``n_raster_b``) any alignment of the search may interpolate from, and where that span lies in B at all
    (lowest and highest coordinate, unclipped): (first, last, lowest, highest)."""
    delta = int(MAX_SHIFT * n_a) + 1 + 0.5  # phase-correlation shift: an allowed index and a sub-pixel step of <= 0.5
    u = np.arange(n, dtype=np.float64) / ratio_a - (n_a - 1) / 2
    ends = np.stack([(u + sign * delta) / s for sign in (-1, 1) for s in (float(SCALES[0]), float(SCALES[-1]))])
    lo = ratio_b * (ends.min(axis=0) + (n_b - 1) / 2) - 0.01
    hi = ratio_b * (ends.max(axis=0) + (n_b - 1) / 2) + 0.01
    first = np.clip(np.floor(lo), 0, n_raster_b - 1).astype(np.int64)
    last = np.clip(np.floor(hi) + 1, 0, n_raster_b - 1).astype(np.int64)
    return first, last, lo, hi


def _span(x: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``x`` over rows first[i]..last[i] (inclusive) for every i, by a sparse table: (len(first), ...)."""
    n = len(x)
    lo = np.full((max(1, n.bit_length()), *x.shape), np.inf, x.dtype)
    hi = np.full(lo.shape, -np.inf, x.dtype)
    lo[0], hi[0] = x, x
    for j in range(1, len(lo)):  # level j: over rows i .. i + 2**j - 1
        k = 1 << (j - 1)
        lo[j, : n - 2 * k + 1] = np.minimum(lo[j - 1, : n - 2 * k + 1], lo[j - 1, k: n - k + 1])
        hi[j, : n - 2 * k + 1] = np.maximum(hi[j - 1, : n - 2 * k + 1], hi[j - 1, k: n - k + 1])
    level = np.floor(np.log2(last - first + 1)).astype(np.int64)
    end = last - (1 << level) + 1
    return np.minimum(lo[level, first], lo[level, end]), np.maximum(hi[level, first], hi[level, end])


def _box_range(img: np.ndarray, ry: tuple, rx: tuple, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``img`` over each A pixel's box (-inf / +inf, no bound, outside ``rows`` x ``cols``)."""
    lo = np.full((len(rows), len(cols)), -np.inf, np.float32)
    hi = np.full((len(rows), len(cols)), np.inf, np.float32)
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    if len(r) and len(c):
        lo_r, hi_r = _span(img, ry[0][r], ry[1][r])  # (len(r), B's width)
        lo_rc, _ = _span(lo_r.T, rx[0][c], rx[1][c])  # (len(c), len(r))
        _, hi_rc = _span(hi_r.T, rx[0][c], rx[1][c])
        lo[np.ix_(r, c)], hi[np.ix_(r, c)] = lo_rc.T, hi_rc.T
    return lo, hi


@dataclass(frozen=True, slots=True)
class _BSide:
    grey_lo: np.ndarray  # B's grey range over each A grey pixel's box
    grey_hi: np.ndarray
    range_lo: np.ndarray  # the same box over B's 3 x 3 minima and maxima (the range test's local ranges)
    range_hi: np.ndarray
    grey_cells: np.ndarray  # (ch, cw) bool: cells always inside B and away from both borders
    chroma_lo: np.ndarray  # (2, h', w')
    chroma_hi: np.ndarray
    chroma_full: np.ndarray  # (h', w') bool: pixels whose 3 x 3 neighbourhood is always compared


def _b_side(a: Thumb, b: Thumb) -> _BSide:
    """B's value ranges over the boxes of A's pixels (depends on A only through its thumbnails' shapes)."""
    (h, w), (hb, wb) = a.grey.shape, b.grey.shape
    # grey: pixels of A always in the agreement's core (inside B less its border band, and off A's own border)
    m = int(round(BORDER * max(h, w)))
    ry, rx = _reach(h, 1.0, h, hb, 1.0, hb), _reach(w, 1.0, w, wb, 1.0, wb)
    rows = (ry[2] >= m) & (ry[3] <= hb - 1 - m) & (np.arange(h) >= m) & (np.arange(h) < h - m)
    cols = (rx[2] >= m) & (rx[3] <= wb - 1 - m) & (np.arange(w) >= m) & (np.arange(w) < w - m)
    ch, cw = h // CELL, w // CELL
    cells = rows[: ch * CELL].reshape(ch, CELL).all(axis=1)[:, None] & cols[: cw * CELL].reshape(cw, CELL).all(axis=1)[None, :]
    grey_lo, grey_hi = _box_range(b.grey, ry, rx, rows, cols)
    range_lo = _box_range(minimum_filter(b.grey, 3), ry, rx, rows, cols)[0]
    range_hi = _box_range(maximum_filter(b.grey, 3), ry, rx, rows, cols)[1]
    # colour: chroma pixels always inside B and off the border band, with their whole 3 x 3 neighbourhood
    (hc, wc), (hcb, wcb) = a.chroma.shape[1:], b.chroma.shape[1:]
    fa, fb = wc / w, wcb / wb
    mc = int(np.ceil(BORDER * max(hc, wc))) + 1
    cy, cx = _reach(hc, fa, h, hb, fb, hcb), _reach(wc, fa, w, wb, fb, wcb)
    crows = (cy[2] >= 0) & (cy[3] <= hcb - 1) & (np.arange(hc) >= mc) & (np.arange(hc) < hc - mc)
    ccols = (cx[2] >= 0) & (cx[3] <= wcb - 1) & (np.arange(wc) >= mc) & (np.arange(wc) < wc - mc)
    def full(v: np.ndarray) -> np.ndarray:
        return v & np.r_[False, v[:-1]] & np.r_[v[1:], False]
    chroma_full = full(crows)[:, None] & full(ccols)[None, :]
    lo, hi = zip(*(_box_range(b.chroma[c], cy, cx, crows, ccols) for c in range(2)))
    return _BSide(grey_lo, grey_hi, range_lo, range_hi, cells, np.stack(lo), np.stack(hi), chroma_full)


def _bound_rejects(a: Thumb, a_side: _ASide, bs: _BSide) -> bool:
    """True when no alignment in the search can pass the agreement test (so ``verify`` rejects the pair)."""
    if bs.chroma_full.any():
        gap = np.maximum(np.maximum(bs.chroma_lo - a.chroma, a.chroma - bs.chroma_hi), 0)  # (2, h', w')
        hc, wc = gap.shape[1:]  # chroma_full is off the edges: 3 x 3 means of the interior only
        mean = sum(gap[:, i:hc - 2 + i, j:wc - 2 + j] for i in range(3) for j in range(3)) / 9
        if (mean >= a_side.chroma_allowed[:, 1:-1, 1:-1] * (1 + BOUND_MARGIN) + BOUND_MARGIN)[:, bs.chroma_full[1:-1, 1:-1]].any():
            return True
    if bs.grey_cells.any():
        h, w = a.grey.shape
        ch, cw = h // CELL, w // CELL
        gap = np.maximum(np.maximum(bs.grey_lo - a.grey, a.grey - bs.grey_hi), 0)
        e = gap[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).mean(axis=(1, 3))
        contrast = a_side.grad[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).mean(axis=(1, 3))
        allowed = CELL_ABS + CELL_REL * contrast
        if (e >= allowed * (1 + BOUND_MARGIN) + BOUND_MARGIN)[bs.grey_cells].any():
            return True
        # the range test: A outside every local range B could bring there (a lower bound of its one-way gap)
        gap = np.maximum(np.maximum(bs.range_lo - a.grey, a.grey - bs.range_hi), 0)
        e = gap[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).mean(axis=(1, 3))
        allowed = GAP_GREY + GAP_REL * contrast
        if (e >= allowed * (1 + BOUND_MARGIN) + BOUND_MARGIN)[bs.grey_cells].any():
            return True
    return False


class _LRU(dict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            value = self.pop(key)
        else:
            value = make()
            if len(self) >= self.size:
                del self[next(iter(self))]
        self[key] = value
        return value


class PairVerifier:
    """``verify`` over stored thumbnails (bytes), for many pairs: the same verdict for every pair, and for an
    accepted pair the same alignment, with per-image work cached and most distinct scenes rejected by the
    bound above. A rejected pair's fields are not ``verify``'s (only ``accepted`` is meant to be read)."""

    REJECTED = Alignment(1.0, 0.0, 0.0, 0.0, np.inf, False)

    def __init__(self, cache: int = 2048):
        self._thumbs: _LRU = _LRU(cache)  # blob -> (Thumb | None, _ASide | None: None when flat)
        self._b: _LRU = _LRU(4)  # (blob, A's shapes) -> [_BSide, grid spectra or None]
        self.pairs = self.bounded = self.aligned = 0

    def thumb(self, blob: bytes | None) -> tuple[Thumb | None, _ASide | None]:
        def make() -> tuple[Thumb | None, _ASide | None]:
            t = read_thumb(blob)
            return (t, None) if t is None or t.flat else (t, _a_side(t))
        return self._thumbs.get_or(blob, make) if blob else (None, None)

    def screen(self, pairs: Sequence[tuple[bytes | None, bytes | None]], chunk: int = 512) -> list[bool]:
        """Which ``pairs`` (A, B) may be accepted: False where ``__call__`` would reject without aligning (missing or
        flat thumbnail, different frames, the bound). The index asks one B after another, and B's candidates scatter
        over the whole index, so a per-image cache of any fixed size stops hitting as the index grows (the 20k
        crawl's last shard rebuilt an A side for 4 of 5 pairs). Here pairs go by A within chunks of ``chunk`` Bs:
        each A's side is built once per chunk, each B's once, the B sides of a chunk held together (~70 kB each)."""
        keep = [False] * len(pairs)
        chunk_of = {b: k // chunk for k, b in enumerate(dict.fromkeys(b for _, b in pairs))}
        order = sorted(range(len(pairs)), key=lambda i: (chunk_of[pairs[i][1]], id(pairs[i][0])))
        b_sides: dict[tuple, _BSide] = {}
        current = None
        for i in order:
            a_blob, b_blob = pairs[i]
            if chunk_of[b_blob] != current:
                current, b_sides = chunk_of[b_blob], {}
            (a, a_side), (b, b_side) = self.thumb(a_blob), self.thumb(b_blob)
            if a_side is None or b_side is None or _frames_differ(a, b):
                self.pairs += 1
                continue
            key = (b_blob, a.grey.shape, a.chroma.shape)
            bs = b_sides.get(key)
            if bs is None:
                bs = b_sides[key] = _b_side(a, b)
            if _bound_rejects(a, a_side, bs):
                self.pairs += 1
                self.bounded += 1
            else:
                keep[i] = True
        return keep

    def __call__(self, a_blob: bytes | None, b_blob: bytes | None) -> Alignment | None:
        self.pairs += 1
        (a, a_side), (b, b_side) = self.thumb(a_blob), self.thumb(b_blob)
        if a_side is None or b_side is None:  # missing, unreadable or flat
            return None
        if _frames_differ(a, b):
            return self.REJECTED
        entry = self._b.get_or((b_blob, a.grey.shape, a.chroma.shape), lambda: [_b_side(a, b), None])
        if _bound_rejects(a, a_side, entry[0]):
            self.bounded += 1
            return self.REJECTED
        if entry[1] is None:
            entry[1] = _grid_spectra(b.grey - b.grey.mean(), a.grey.shape)
        self.aligned += 1
        return _verify(a, b, _spectrum(a.grey), entry[1], a_side)
