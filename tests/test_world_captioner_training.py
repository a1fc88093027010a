"""``train_captioner_staged`` writes a folder the product's ``Captioner`` loads, stage after stage.

Tiny runs (a few steps on a few dozen scenes at a small side): what is checked is the plumbing a retrained demo
captioner goes through, i.e. a later stage going on from the saved weights at another input side, the tag head
trained but left out of the folder, and the image processor saved at the side the encoder was trained at.
"""

from __future__ import annotations

import json
from dataclasses import replace

from caption_assets.world.train_captioner import CaptionerTrainConfig, train_captioner_staged


def test_stages_go_on_from_the_saved_captioner_at_a_new_side_without_the_tag_head(tmp_path):
    from safetensors.torch import load_file

    from caption_assets.world.evaluate import as_crawled, test_scenes
    from resources.captioner import Captioner

    tiny = CaptionerTrainConfig(n_images=24, steps=3, batch_size=8, warmup=1, hidden=32, image_size=64)
    stages = (tiny, replace(tiny, image_size=80, tag_weight=1.0, seed=1))
    out = tmp_path / "captioner"
    reports = train_captioner_staged(out, stages, log=lambda _: None)

    assert list(reports) == ["stage_1", "stage_2"]
    assert reports["stage_2"]["config"]["init_from"] == str(out) and reports["stage_2"]["config"]["tag_weight"] == 1.0
    # the second stage went on from the first's weights (same parameter count) at the new side
    assert reports["stage_1"]["parameters"] == reports["stage_2"]["parameters"]
    assert json.loads((out / "config.json").read_text())["encoder"]["image_size"] == 80
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 80, "width": 80}
    assert (out / "README.md").read_text().startswith("World captioner (demo): Swin encoder + GPT-2 decoder")
    saved = load_file(out / "model.safetensors")
    assert not any("head" in k and not k.startswith(("encoder.", "decoder.")) for k in saved)
    assert sum(v.numel() for v in saved.values()) <= reports["stage_2"]["parameters"]

    cap = Captioner(model=str(out), device="cpu", num_workers=0, decoding="greedy", num_candidates=1, max_new_tokens=8)
    cap.load()
    pixels = cap._pixels(as_crawled(test_scenes(1)[0]))
    assert pixels.shape == (3, 80, 80)
    caps = cap.generate(pixels.unsqueeze(0))
    assert len(caps) == 1 and isinstance(caps[0][0], str)
    # the loaded weights are the saved ones, nothing re-initialised by the loader (compared by shape and sum: the
    # loader may rename keys)
    fingerprint = lambda tensors: {(tuple(t.shape), round(t.double().sum().item(), 5)) for t in tensors}  # noqa: E731
    assert fingerprint(saved.values()) == fingerprint(cap._model.state_dict().values())


def test_widened_patches_see_a_twice_larger_image_as_the_old_encoder_saw_its_box_filtered_half(tmp_path):
    import pytest
    import torch

    from caption_assets.world.train_captioner import build_model, build_tokenizer, widen_patches

    cfg = CaptionerTrainConfig(hidden=32, image_size=64)
    model = build_model(len(build_tokenizer()), cfg).eval()
    # a non-zero patch bias: with the zero it starts at, LayerNorm would hide a kernel left at 4x its weight
    torch.nn.init.normal_(model.encoder.embeddings.patch_embeddings.projection.bias, std=0.5, generator=torch.Generator().manual_seed(0))
    twin = build_model(len(build_tokenizer()), cfg)  # a fresh copy: same seed, same weights
    twin.encoder.embeddings.patch_embeddings.projection.bias.data.copy_(model.encoder.embeddings.patch_embeddings.projection.bias)
    wide = widen_patches(twin, 8)
    assert twin.config.encoder.patch_size == 4  # the model passed in is left as it was
    assert wide.config.encoder.patch_size == 8 and wide.encoder.embeddings.patch_embeddings.projection.kernel_size == (8, 8)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        old = model.encoder(pixel_values=torch.nn.functional.avg_pool2d(x, 2)).last_hidden_state
        new = wide.eval().encoder(pixel_values=x).last_hidden_state
        plain = model.encoder(pixel_values=x[..., ::2, ::2]).last_hidden_state  # every other pixel: not the same picture
    assert new.shape == old.shape
    torch.testing.assert_close(new, old, atol=1e-5, rtol=1e-4)
    assert (plain - old).abs().max() > 1e-2  # the comparison can tell pictures apart
    with pytest.raises(ValueError, match="not a multiple"):
        widen_patches(model, 6)


def test_a_stage_with_wider_patches_goes_on_from_the_saved_captioner(tmp_path):
    from safetensors.torch import load_file

    tiny = CaptionerTrainConfig(n_images=24, steps=2, batch_size=8, warmup=1, hidden=32, image_size=64)
    out = tmp_path / "captioner"
    reports = train_captioner_staged(out, (tiny, replace(tiny, image_size=128, patch_size=8, seed=1)), log=lambda _: None)
    config = json.loads((out / "config.json").read_text())["encoder"]
    assert (config["image_size"], config["patch_size"]) == (128, 8)
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 128, "width": 128}
    assert load_file(out / "model.safetensors")["encoder.embeddings.patch_embeddings.projection.weight"].shape[-2:] == (8, 8)
    assert reports["stage_2"]["parameters"] - reports["stage_1"]["parameters"] == 8 * 3 * (8 * 8 - 4 * 4)  # only the kernel grew (8 channels: hidden / 4)
