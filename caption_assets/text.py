"""Alt-text decoding and normalisation.

Decoding is strict: a caption that is not UTF-8 is quarantined rather than guessed at. Normalising
repairs what the web does to text (mojibake, HTML entities and tags, odd whitespace) with ftfy, and
keeps the raw text beside it.
"""

from __future__ import annotations

import re

import ftfy

DEFAULT_MAX_CAPTION_CHARS = 4096

_TAG = re.compile(r"<[^>]{1,200}>")
_SPACE = re.compile(r"\s+")


class BadCaption(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def decode_caption(raw: bytes | str | None, max_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> str:
    """The raw alt-text as a string; ``BadCaption`` when missing, not UTF-8, empty or huge."""
    if raw is None:
        raise BadCaption("missing_caption", "no caption (.txt member, json 'caption' or caption column)")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadCaption("caption_not_utf8", f"caption bytes are not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
        try:
            text.encode("utf-8")  # CSV manifests are read with surrogateescape: bad bytes surface here
        except UnicodeEncodeError:
            raise BadCaption("caption_not_utf8", "caption bytes are not UTF-8") from None
    if len(text) > max_chars:
        raise BadCaption("caption_too_long", f"caption has {len(text):,} characters (limit {max_chars:,})")
    if not text.strip():
        raise BadCaption("empty_caption", "caption is empty or whitespace only")
    return text


def storable(text: str | None) -> str | None:
    """Text that UTF-8 can store. Names read with surrogateescape (tar member names, CSV cells that are
    not UTF-8 on disk) keep their undecodable bytes as visible ``\\xNN`` escapes instead of failing the write."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def normalise_caption(text: str) -> str:
    """ftfy repair (mojibake, HTML entities), tags removed, whitespace collapsed."""
    if text.isascii() and "&" not in text and "<" not in text:
        return _SPACE.sub(" ", text).strip()  # nothing for ftfy to repair; skip its cost
    fixed = ftfy.fix_text(text, unescape_html=True, normalization="NFC")
    fixed = _TAG.sub(" ", fixed)
    return _SPACE.sub(" ", fixed).strip()
