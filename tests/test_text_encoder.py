"""The trimmed text forward gives open_clip's text embeddings, for a fraction of the positions."""

from __future__ import annotations

import torch

from resources.clip import build_random_checkpoint, encode_text_trimmed, load_clip

CAPTIONS = ["a red circle", "a large blue square on the left and a small green star at the top on white",
            "!!! wow !!!", "", "word " * 100, "Café & croissant <b>fresh</b> 東京"]


def test_trimmed_text_forward_matches_the_full_context(tmp_path):
    for name, ckpt in (("world-clip", "data/demo_models/world-clip.pt"), ("demo-tiny-clip", str(build_random_checkpoint(tmp_path / "t.pt")))):
        model, _, tokenizer = load_clip(name, ckpt, "cpu", "fp32")
        tokens = tokenizer(CAPTIONS)
        assert int(tokens.argmax(dim=-1).max()) + 1 == tokens.shape[1]  # the long caption fills the context
        short = tokens[:3]
        assert int(short.argmax(dim=-1).max()) + 1 < short.shape[1] // 2  # the others use under half of it
        with torch.inference_mode():
            for batch in (tokens, short, tokens[3:4]):
                assert torch.allclose(encode_text_trimmed(model, batch), model.encode_text(batch), atol=1e-5)


def test_other_text_towers_run_unchanged():
    class Tower(torch.nn.Module):
        def encode_text(self, tokens):
            return tokens.float()

    tokens = torch.tensor([[49406, 320, 49407, 0]])
    assert torch.equal(encode_text_trimmed(Tower(), tokens), tokens.float())
