"""Train the demo profile's models on the world's training split and commit-ready save them.

    python scripts/train_demo_models.py [--out data/demo_models] [--only clip|captioner|fuser] [--threads N] [--clip-steps N [N ...]] [--captioner-steps N [N ...]] [--fuser-steps N]

The shipped models came from `--only clip` (six stages, ``CLIP_STAGES``: ``ClipTrainConfig``'s defaults, the ResNet
tower and the tag head, 6,000 steps, 46 minutes on two threads, alone; then two 3,000-step stages on splits skewed to
small objects, 48 and 44 minutes on one thread beside a captioner run, via `--clip-from-stage 2`; then two more, 26
minutes on two threads and 45 on one beside a captioner run, the last with shapes in varied proportions, via
`--clip-from-stage 4` and 5; then a 2,500-step stage with shapes turned and filling their box, 40 minutes with
rendering on one thread beside a captioner run, via `--clip-from-stage 6`), `--only captioner`
(fifteen stages, ``CAPTIONER_STAGES``: the wide world with augmentations at 96 px, the last two at 192 px; the first on one thread beside a
CLIP run, 28 minutes, the second on two threads, 17 minutes, via `--captioner-from-stage 2`; the third and fourth, with
the tag head, on one thread each beside another captioner run, 31 and 24 minutes with rendering, via `--captioner-from-stage 3`;
the fifth, sixth and seventh, with the tag head, on two threads, 19, 25 and 20 minutes with rendering, one at a time via
`--captioner-from-stage 5`, 6 and 7; the eighth and ninth, skewed to small objects, on one thread beside the CLIP's,
33 and 25 minutes, via `--captioner-from-stage 8`; the tenth and eleventh, skewed small with shapes in varied
proportions, on one thread beside a CLIP or a probe run, 27 and 26 minutes with rendering, via `--captioner-from-stage 10`; the
twelfth and thirteenth, with shapes turned and filling their box, objects up to 0.84 of the frame, on one thread beside
the CLIP's or probe runs, 28 and 28 minutes with rendering, via `--captioner-from-stage 12`; the fourteenth and
fifteenth at 192 px with 8 px patches, on one thread beside another captioner run, 28 and 32 minutes with rendering,
via `--captioner-from-stage 14`), and `--only fuser`
(two stages: the copy task, then the product's prompt; see ``train_fuser_staged``). CPU only, seeded, reproducible on the same machine, thread count and
library versions. Writes:
``world-clip.pt`` + ``world-clip.json`` (open_clip checkpoint and model config), ``world-captioner/``
(a transformers VisionEncoderDecoder saved with ``save_pretrained``), ``world-fuser/`` (a Llama-config causal LM
with its byte-level BPE tokenizer and chat template; text only, so it renders no images), and ``training_report.json``
(training time, sizes, and the held-out test-split figures measured through the product's loaders).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caption_assets.world.models import evaluate_models, folder_size  # noqa: E402
from caption_assets.world.train_captioner import CAPTIONER_STAGES, train_captioner_staged  # noqa: E402
from caption_assets.world.evaluate import clip_checkpoint_figures  # noqa: E402
from caption_assets.world.train_clip import CLIP_STAGES, VISION_TOWERS, ClipTrainConfig, train_clip_staged  # noqa: E402
from caption_assets.world.train_fuser import FUSION_STAGE, evaluate_fuser, train_fuser_staged  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "demo_models")
    ap.add_argument("--clip-steps", type=int, nargs="+", default=[c.steps for c in CLIP_STAGES], help="steps of each CLIP stage (fewer numbers run only the first stages)")
    ap.add_argument("--clip-from-stage", type=int, default=1, help="go on from the CLIP already in --out (its earlier stages ran)")
    ap.add_argument("--clip-vision", choices=sorted(VISION_TOWERS), default=ClipTrainConfig.vision, help="the CLIP's vision tower")
    ap.add_argument("--clip-wide-share", type=float, default=ClipTrainConfig.wide_share, help="share of the CLIP's split from the wide world")
    ap.add_argument("--clip-augmented", action=argparse.BooleanOptionalAction, default=ClipTrainConfig.augmented)
    ap.add_argument("--clip-tag-weight", type=float, default=ClipTrainConfig.tag_weight, help="weight of the caption-tag head's loss (0: none)")
    ap.add_argument("--captioner-steps", type=int, nargs="+", default=[c.steps for c in CAPTIONER_STAGES], help="steps of each captioner stage (fewer numbers run only the first stages)")
    ap.add_argument("--captioner-from-stage", type=int, default=1, help="go on from the captioner already in --out (its earlier stages ran)")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--fuser-steps", type=int, default=FUSION_STAGE.steps, help="steps of the fusion stage")
    ap.add_argument("--only", choices=["clip", "captioner", "fuser"], default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {}
    figures: dict = {}
    if args.only in (None, "fuser"):  # text only: no scenes rendered
        print("training world-fuser ...", flush=True)
        fusion = replace(FUSION_STAGE, steps=args.fuser_steps)
        report["fuser"] = train_fuser_staged(args.out / "world-fuser", fusion=fusion, log=lambda m: print(m, flush=True))
        figures["fuser"] = evaluate_fuser(args.out / "world-fuser")
        figures["fuser_captioner_extra_objects"] = evaluate_fuser(args.out / "world-fuser", extra_rate=FUSION_STAGE.captioner_extra_rate)
    if args.only == "fuser":
        write_report(args.out, report, figures, torch.get_num_threads())
        return
    # Each model renders its own split at its own input side (the wide world and augmentations, see ``render_split``).
    if args.only in (None, "clip"):
        print("training world-clip ...", flush=True)
        stages = tuple(replace(c, steps=n, n_images=args.images, vision=args.clip_vision, wide_share=args.clip_wide_share,
                               augmented=args.clip_augmented, tag_weight=args.clip_tag_weight) for c, n in zip(CLIP_STAGES, args.clip_steps))
        done = train_clip_staged(args.out / "world-clip.pt", stages, start=args.clip_from_stage - 1, log=lambda m: print(m, flush=True),
                                 on_checkpoint=clip_checkpoint_figures)
        report["clip"] = staged_report(previous_stages(args.out, "clip") if args.clip_from_stage > 1 else {}, done)
    if args.only in (None, "captioner"):
        print("training world-captioner ...", flush=True)
        stages = tuple(replace(c, steps=n, n_images=args.images) for c, n in zip(CAPTIONER_STAGES, args.captioner_steps))
        done = train_captioner_staged(args.out / "world-captioner", stages, start=args.captioner_from_stage - 1, log=lambda m: print(m, flush=True))
        report["captioner"] = staged_report(previous_stages(args.out, "captioner") if args.captioner_from_stage > 1 else {}, done)
    print("evaluating on the held-out test split ...", flush=True)
    trained = ("clip", "captioner") if args.only is None else (args.only,)
    figures.update(evaluate_models(args.out, which=trained))
    write_report(args.out, report, figures, torch.get_num_threads())


def previous_stages(out: Path, model: str) -> dict:
    """The stages of ``model`` ("clip", "captioner") an earlier run recorded (a pre-staging report is stage 1)."""
    path = out / "training_report.json"
    old = json.loads(path.read_text()).get(model, {}) if path.exists() else {}
    return {k: v for k, v in old.items() if k.startswith("stage_")} or ({"stage_1": old} if old else {})


def staged_report(previous: dict, done: dict) -> dict:
    """One model's report: every stage's, and the seconds they took together."""
    stages = {**previous, **done}
    return {**stages, **{k: round(sum(v[k] for v in stages.values()), 1) for k in ("train_seconds", "render_seconds")}}


def write_report(out: Path, report: dict, figures: dict, threads: int) -> None:
    """Merge into the report last: `--only clip`, `--only captioner` and `--only fuser` may run side by side."""
    sizes = {"world-clip.pt": out / "world-clip.pt", "world-captioner": out / "world-captioner", "world-fuser": out / "world-fuser"}
    report_path = out / "training_report.json"
    merged = json.loads(report_path.read_text()) if report_path.exists() else {}
    merged.update(report)
    merged.setdefault("test_split", {}).update(figures)
    merged["sizes_mb"] = {k: round((p.stat().st_size if p.is_file() else folder_size(p)) / 1e6, 2) for k, p in sizes.items() if p.exists()}
    merged["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {threads}"
    report_path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps({"test_split": figures, "sizes_mb": merged["sizes_mb"]}, indent=2))


if __name__ == "__main__":
    main()
