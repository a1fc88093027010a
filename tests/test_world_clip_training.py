"""``train_clip`` with each vision tower writes a checkpoint the product's loader reads back as trained.

Tiny runs (a few steps on a few dozen scenes): what is checked is the plumbing a retrained demo CLIP goes
through, i.e. the model-config JSON beside the checkpoint, buffers (the ResNet's batch-norm statistics) kept,
and the learning-curve hook called on schedule, not the quality of the model.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from caption_assets.world.data import TRAIN, render_split
from caption_assets.world.train_clip import TAGS, VISION_TOWERS, ClipTrainConfig, caption_tags, train_clip, train_clip_staged


@pytest.mark.parametrize("vision", sorted(VISION_TOWERS))
def test_a_trained_world_clip_loads_through_load_clip(tmp_path, vision: str):
    from caption_assets.world.evaluate import as_crawled, test_scenes
    from resources.clip import load_clip

    # The ResNet run also trains the tag head: it must not reach the checkpoint (saved keys == the loaded model's).
    cfg = replace(ClipTrainConfig(), vision=vision, steps=4, n_images=24, warmup=2, batch_size=8, tag_weight=1.0 if vision == "resnet" else 0.0)
    px = VISION_TOWERS[vision]["image_size"]
    seen: list[int] = []

    def hook(model, step: int) -> dict:
        assert not model.training and torch.is_inference_mode_enabled()
        seen.append(step)
        return {"px": model.visual.image_size}

    name = f"tiny-{vision}-clip"
    report = train_clip(cfg, tmp_path / f"{name}.pt", log=lambda _: None, data=render_split(TRAIN, 24, px=px, workers=1),
                        on_checkpoint=hook, every=3)
    assert seen == [3, 4]
    assert [c["step"] for c in report["checkpoints"]] == [3, 4]
    assert json.loads((tmp_path / f"{name}.json").read_text())["vision_cfg"] == VISION_TOWERS[vision]

    saved = torch.load(tmp_path / f"{name}.pt", weights_only=False)["state_dict"]
    model, preprocess, tokenizer = load_clip(name, str(tmp_path / f"{name}.pt"), "cpu", "fp32")
    loaded = model.state_dict()
    assert saved.keys() == loaded.keys()
    for key, value in saved.items():  # weights and buffers alike (batch-norm running statistics for the ResNet)
        assert torch.equal(loaded[key].to(value.dtype), value), key
    if vision == "resnet":
        assert any(k.endswith("running_var") for k in saved) and not torch.all(saved["visual.bn1.running_var"] == 1)

    image = preprocess(as_crawled(test_scenes(1)[0])).unsqueeze(0)
    assert image.shape[-1] == px
    with torch.inference_mode():
        emb = model.encode_image(image)
        txt = model.encode_text(tokenizer(["a red circle"]))
    assert emb.shape == txt.shape == (1, 128) and torch.isfinite(emb).all()


def test_caption_tags_are_what_the_caption_names():
    tags = caption_tags(['two small red circles and a blue star on a green background with the word "OPEN"', "IMG_0042.jpg", "red circle"])
    named = [{TAGS[i] for i in row.nonzero().flatten().tolist()} for row in tags]
    assert named[0] == {"red circle", "blue star", "circle", "star", "red", "blue"}  # not the background's green
    assert named[1] == set()
    assert named[2] == {"red circle", "circle", "red"}


def test_a_later_stage_goes_on_from_the_saved_clip(tmp_path):
    """``train_clip_staged``: stage 2 starts from the checkpoint stage 1 saved, not from a fresh initialisation; at
    learning rate zero the weights it saves are the ones it loaded (fp16 both ways)."""
    import shutil

    tiny = replace(ClipTrainConfig(), steps=2, n_images=16, warmup=1, batch_size=8, tag_weight=1.0)
    stages = (tiny, replace(tiny, lr=0.0, size_bias=2.0, seed=1))
    out = tmp_path / "clip.pt"
    assert list(train_clip_staged(out, stages[:1], log=lambda _: None)) == ["stage_1"]
    shutil.copy(out, tmp_path / "first.pt")
    reports = train_clip_staged(out, stages, start=1, log=lambda _: None)
    assert list(reports) == ["stage_2"] and reports["stage_2"]["config"]["init_from"] == str(out)
    train_clip(stages[1], tmp_path / "fresh.pt", log=lambda _: None)  # the same stage from a fresh initialisation
    first, second, fresh = (torch.load(p, weights_only=False)["state_dict"] for p in (tmp_path / "first.pt", out, tmp_path / "fresh.pt"))
    weights = [k for k, v in first.items() if v.is_floating_point() and "running" not in k]  # batch-norm statistics move in train mode
    assert all(torch.equal(first[k], second[k]) for k in weights)
    assert not all(torch.equal(first[k], fresh[k]) for k in weights)
