"""The world's demo models in one run: training time, model sizes, held-out test-split figures.

    python bench/world.py            # train both models from scratch into a temp folder, then measure
    python bench/world.py --shipped  # measure the committed models (data/demo_models) and print their recorded training time
    python bench/world.py --clip-steps 300 --captioner-steps 300 200   # a shorter run (figures will be lower)

Targets (issue 10): zero-shot shape and colour accuracy >= 0.9; correct-vs-misaligned ROC AUC >= 0.95;
true caption above the one-attribute-wrong one for >= 0.8 of test images; greedy captions naming every
object's colour and shape for >= 0.9 of clean test images.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {
    ("clip", "zeroshot_shape_acc"): 0.9, ("clip", "zeroshot_colour_acc"): 0.9, ("clip", "misaligned_auc"): 0.95,
    ("clip", "beats_wrong_attribute"): 0.8, ("captioner", "greedy_names_every_object"): 0.9,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipped", action="store_true")
    ap.add_argument("--clip-steps", type=int, default=None)
    ap.add_argument("--captioner-steps", type=int, nargs="+", default=None, help="steps of each captioner stage")
    args = ap.parse_args()
    from caption_assets.world.models import DEMO_MODELS, evaluate_models, folder_size

    if args.shipped:
        folder = DEMO_MODELS
        report = json.loads((folder / "training_report.json").read_text())
        t0 = time.perf_counter()
        figures = evaluate_models(folder)
        wall = None
    else:
        folder = Path(tempfile.mkdtemp(prefix="world-models-"))
        cmd = [sys.executable, str(ROOT / "scripts" / "train_demo_models.py"), "--out", str(folder)]
        cmd += ["--clip-steps", str(args.clip_steps)] if args.clip_steps else []
        cmd += ["--captioner-steps", *map(str, args.captioner_steps)] if args.captioner_steps else []
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        report = json.loads((folder / "training_report.json").read_text())
        figures = report["test_split"]
    print(f"\nmachine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}, models in {folder}")
    print(f"train world-clip:      {report['clip']['train_seconds']} s ({report['clip']['config']['steps']} steps; rendering {report['clip']['render_seconds']} s)")
    for name, stage in ((k, v) for k, v in report["captioner"].items() if k.startswith("stage_")):
        print(f"train world-captioner {name}: {stage['train_seconds']} s ({stage['config']['steps']} steps, wide share {stage['config']['wide_share']}; rendering {stage['render_seconds']} s)")
    if wall is not None:
        print(f"whole run (render + train + evaluate): {wall:.0f} s")
    print(f"sizes: world-clip.pt {(folder / 'world-clip.pt').stat().st_size / 1e6:.1f} MB, world-captioner/ {folder_size(folder / 'world-captioner') / 1e6:.1f} MB")
    print("\nheld-out test split (through load_clip / Captioner):")
    for (model, metric), target in TARGETS.items():
        value = figures[model][metric]
        print(f"  {model:9s} {metric:28s} {value:.3f}   target >= {target}  {'ok' if value >= target else 'MISSED'}")
        wide = figures.get(f"{model}_wide", {}).get(metric)
        if wide is not None:
            print(f"  {model:9s} {metric:28s} {wide:.3f}   (the wide world: objects 0.1-0.75 of the frame)")
    cap = figures["captioner"]
    print(f"  captioner dbs_all_distinct             {cap['dbs_all_distinct']:.3f}   (candidate sets with no repeated caption)")
    print(f"  captioner dbs_candidates_correct       {cap['dbs_candidates_correct']:.3f}   (diverse-beam candidates naming every object)")
    for ex in cap["examples"][:3]:
        print(f"    truth:  {ex['truth']}\n    greedy: {ex['greedy']}\n    dbs:    {ex['diverse_beam']}")


if __name__ == "__main__":
    main()
