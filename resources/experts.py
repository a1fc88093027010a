"""``VisionExperts`` (FuseCap): OCR text and object tags per image, each expert switchable.

- OCR: Tesseract (Debian's ``tesseract-ocr``) through pytesseract, run in a thread pool (each call
  is a subprocess). When the binary is missing the expert reports itself unavailable; nothing fails.
- Tags: zero-shot classification with the ``ClipScorer`` already loaded for scoring, against a tag
  vocabulary ("a photo of a {tag}"), reusing the image embeddings stored in ``scored_pairs``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from dagster import ConfigurableResource
from PIL import Image

from caption_assets.readers import read_image_bytes

# COCO's 80 object categories: a common, documented default vocabulary.
COCO_TAGS = (
    "person bicycle car motorcycle airplane bus train truck boat traffic-light fire-hydrant stop-sign parking-meter bench "
    "bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee skis snowboard "
    "sports-ball kite baseball-bat baseball-glove skateboard surfboard tennis-racket bottle wine-glass cup fork knife spoon "
    "bowl banana apple sandwich orange broccoli carrot hot-dog pizza donut cake chair couch potted-plant bed dining-table "
    "toilet tv laptop mouse remote keyboard cell-phone microwave oven toaster sink refrigerator book clock vase scissors "
    "teddy-bear hair-drier toothbrush"
).split()


def ocr_available() -> bool:
    return shutil.which("tesseract") is not None


def ocr_image(data: bytes, min_confidence: float, lang: str) -> tuple[str | None, float | None]:
    """Words (two or more letters or digits) Tesseract reads with confidence >= min_confidence, and their mean confidence."""
    import pytesseract

    try:
        with Image.open(io.BytesIO(data)) as im:
            d = pytesseract.image_to_data(im.convert("RGB"), lang=lang, output_type=pytesseract.Output.DICT, timeout=30)
    except Exception:  # noqa: BLE001 - an OCR failure is "no text", never a failed run
        return None, None
    # Symbols and single characters read off shapes and edges are noise, not text.
    words = [(w.strip(), float(c)) for w, c in zip(d["text"], d["conf"]) if sum(ch.isalnum() for ch in w) >= 2 and float(c) >= min_confidence]
    if not words:
        return None, None
    return " ".join(w for w, _ in words), float(np.mean([c for _, c in words]) / 100.0)


class VisionExperts(ConfigurableResource):
    ocr: bool = True
    ocr_lang: str = "eng"
    ocr_min_confidence: float = 60.0
    ocr_threads: int = 2
    tags: bool = True
    tag_vocabulary: list[str] = list(COCO_TAGS)
    tag_prompt: str = "a photo of a {tag}"
    tag_top_k: int = 3
    tag_min_confidence: float = 0.15
    tag_temperature: float = 100.0  # CLIP's logit scale

    def ocr_status(self) -> str:
        if not self.ocr:
            return "off"
        return "tesseract" if ocr_available() else "unavailable (install tesseract-ocr)"

    def read_text(self, refs: Sequence[tuple]) -> list[tuple[str | None, float | None]]:
        if self.ocr_status() != "tesseract":
            return [(None, None)] * len(refs)

        def one(ref: tuple) -> tuple[str | None, float | None]:
            try:
                return ocr_image(read_image_bytes(*ref), self.ocr_min_confidence, self.ocr_lang)
            except OSError:
                return None, None

        with ThreadPoolExecutor(self.ocr_threads) as pool:
            return list(pool.map(one, refs))

    def tag(self, image_emb: np.ndarray, tag_emb: np.ndarray) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k tags per image by softmax over the vocabulary, above the confidence floor."""
        if not self.tags or len(image_emb) == 0:
            return [[] for _ in range(len(image_emb))], [[] for _ in range(len(image_emb))]
        logits = self.tag_temperature * image_emb.astype(np.float32) @ tag_emb.T
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1)[:, : self.tag_top_k]
        names, scores = [], []
        for row, idx in zip(probs, top):
            keep = [i for i in idx if row[i] >= self.tag_min_confidence]
            names.append([self.tag_vocabulary[i].replace("-", " ") for i in keep])
            scores.append([float(row[i]) for i in keep])
        return names, scores

    def tag_prompts(self) -> list[str]:
        return [self.tag_prompt.format(tag=t.replace("-", " ")) for t in self.tag_vocabulary]
