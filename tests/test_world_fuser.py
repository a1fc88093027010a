"""The demo fuser's training data and checkpoint format (``caption_assets.world.train_fuser``)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from caption_assets.fusion import render_prompt
from caption_assets.world.captions import canonical
from caption_assets.world.scene import sample_scene
from caption_assets.world.train_fuser import FuserTrainConfig, example, examples, train_fuser
from resources.fuser import CaptionFuser


def test_the_answer_carries_the_word_only_when_an_input_did():
    data = examples("train", 400)
    assert data == examples("train", 400)  # deterministic
    with_word = [e for e in data if e.scene.word]
    carried = [e for e in with_word if e.carried]
    assert 0 < len(carried) < len(with_word)  # the OCR sometimes misses it and the alt-text sometimes omits it
    for e in data:
        assert e.answer == canonical(e.scene, word=e.carried)
        in_inputs = bool(e.scene.word) and f'"{e.scene.word}"' in e.inputs.alt_text + e.inputs.expert_facts
        assert e.carried == in_inputs
        assert e.inputs.synthetic_caption and '"' not in e.inputs.synthetic_caption  # the captioner never reads the word


def test_a_tiny_fuser_trains_and_loads_through_the_products_loader(tmp_path: Path):
    cfg = replace(FuserTrainConfig(), n_scenes=300, steps=30, batch_size=8, hidden=32, layers=1, heads=2, vocab_size=400)
    report = train_fuser(cfg, tmp_path / "fuser", log=lambda m: None)
    assert report["curve"][-1]["loss"] < report["curve"][0]["loss"]
    saved = json.loads((tmp_path / "fuser" / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["num_hidden_layers"] == 1
    fuser = CaptionFuser(backend="transformers", model=str(tmp_path / "fuser"), template=cfg.template, max_new_tokens=8, batch_size=4, device="cpu", precision="fp32")
    fuser.setup_for_execution()
    out = fuser.fuse([e.inputs for e in examples("test", 5)])
    assert len(out) == 5 and all(err is None and isinstance(text, str) for text, err in out)
    # the byte-level tokenizer round-trips a caption with its quoted word, and any web text
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "fuser")
    for text in ('a small red circle on the left on a blue background with the word "OPEN"', "Ünïcode Straße 東京 café"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    prompt = render_prompt(cfg.template, example(sample_scene(random.Random(3)), random.Random(3)).inputs)
    assert "<|assistant|>" in tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def test_the_copy_curriculum_puts_the_word_at_varying_distances_and_the_answer_quotes_it():
    from caption_assets.world.train_fuser import copy_examples

    data = copy_examples(200, seed=0)
    assert data == copy_examples(200, seed=0)
    tails = set()
    for prompt, answer in data:
        word = answer.rsplit('"', 2)[1]
        assert answer.endswith(f'with the word "{word}"') and f'"{word}"' in prompt
        tails.add(len(prompt) - prompt.index(f'"{word}"'))
    assert len(tails) > 50  # no fixed offset: a fixed one was learned by position and taught the long prompt nothing


def test_word_weight_and_init_go_on_from_a_checkpoint(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from caption_assets.world.train_fuser import copy_examples, word_choice, word_span

    small = replace(FuserTrainConfig(), n_scenes=200, steps=5, batch_size=4, hidden=32, layers=1, heads=2, vocab_size=400)
    train_fuser(small, tmp_path / "a", log=lambda m: None)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    answer = 'a red circle in the centre on a blue background with the word "QZXJ"'
    span = word_span(tok, answer)  # a word the tokenizer never saw: weighted whatever it splits into
    assert len(span) >= 1 and tok.decode(tok(answer, add_special_tokens=False)["input_ids"][span.start: span.stop]).strip() == "QZXJ"
    assert not word_span(tok, "a red circle in the centre on a blue background")
    more = replace(small, steps=3, word_weight=5.0, copy_share=0.5, word_rate=1.0, seed=1)
    report = train_fuser(more, tmp_path / "b", log=lambda m: None, init=tmp_path / "a")
    assert report["vocab_size"] == len(tok)  # the checkpoint's tokenizer, not a new one
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)
    held = copy_examples(6, seed=99)
    choice = word_choice(tmp_path / "b", pairs=held)
    assert choice["word_positions"] == 6  # the first token of each answer's printed word, however it splits
    assert 0.0 <= choice["p_right_word"] <= 1.0 and choice["chance"] == 0.1


def test_the_staged_recipe_goes_on_from_the_copy_stage_and_leaves_one_checkpoint(tmp_path: Path):
    from caption_assets.world.train_fuser import train_fuser_staged

    tiny = replace(FuserTrainConfig(), n_scenes=120, batch_size=4, hidden=32, layers=1, heads=2, vocab_size=400)
    report = train_fuser_staged(tmp_path / "world-fuser", copy=replace(tiny, steps=2, copy_share=1.0),
                                fusion=replace(tiny, steps=3, copy_share=0.2, seed=1), log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world-fuser"]  # the copy stage's checkpoint is gone
    assert [c["step"] for c in report["copy_stage"]["curve"]] == [0, 1] and [c["step"] for c in report["fusion_stage"]["curve"]] == [0, 2]
    assert report["fusion_stage"]["vocab_size"] == report["copy_stage"]["vocab_size"] == report["vocab_size"]
