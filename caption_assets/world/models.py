"""Where the demo models live and how they are measured (through the same loaders as production weights)."""

from __future__ import annotations

from pathlib import Path

from caption_assets.settings import PROJECT_ROOT

DEMO_MODELS = PROJECT_ROOT / "data" / "demo_models"
CLIP_CHECKPOINT = DEMO_MODELS / "world-clip.pt"
CAPTIONER_FOLDER = DEMO_MODELS / "world-captioner"
FUSER_FOLDER = DEMO_MODELS / "world-fuser"


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def evaluate_models(folder: Path = DEMO_MODELS, n: int = 400, which: tuple[str, ...] = ("clip", "captioner")) -> dict:
    """Test-split figures of the saved demo models, loaded by ``load_clip`` and ``Captioner``: on the classic world
    the crawls draw (``clip``, ``captioner``) and on the wide one (``clip_wide``, ``captioner_wide``)."""
    from caption_assets.world.evaluate import captioner_figures, clip_figures
    from resources.captioner import Captioner
    from resources.clip import load_clip

    out: dict = {}
    if "clip" in which and (folder / "world-clip.pt").exists():
        model, preprocess, tokenizer = load_clip("world-clip", str(folder / "world-clip.pt"), "cpu", "fp32")
        out["clip"] = clip_figures(model, preprocess, tokenizer, n=n)
        out["clip_wide"] = clip_figures(model, preprocess, tokenizer, n=n, wide=True)
    if "captioner" in which and (folder / "world-captioner").exists():
        cap = Captioner(model=str(folder / "world-captioner"), device="cpu", num_workers=0, decoding="diverse_beam", num_candidates=3, beams_per_group=2, max_new_tokens=40)
        cap.load()
        out["captioner"] = captioner_figures(cap, n=min(n, 300))
        out["captioner_wide"] = captioner_figures(cap, n=min(n, 300), wide=True)
    return out
