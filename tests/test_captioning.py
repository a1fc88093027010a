"""Captioner decoding modes, CLIP reranking, fusion templates, guardrails and the fuser backends."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from caption_assets.assets.recaption import rerank
from caption_assets.degeneration import distinct_ngram_ratio
from caption_assets.fusion import FusionInput, Guardrails, phrasing_noise, reject_reason, render_prompt, rule_fuse, unsupported_entities
from resources.captioner import Captioner, one_per_group
from resources.clip import ClipScorer, build_random_checkpoint
from resources.fuser import CaptionFuser
from tests.helpers import tiny_chat_model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def captioner(models_dir: Path, decoding: str, **kw) -> Captioner:
    c = Captioner(model="demo", models_dir=str(models_dir), decoding=decoding, num_workers=0, max_new_tokens=8, **kw)
    c.load()
    return c


PIXELS = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("decoding", ["beam", "diverse_beam", "sampling"])
def test_decoding_modes_give_the_requested_distinct_candidates(models_dir: Path, decoding: str):
    out = captioner(models_dir, decoding, num_candidates=4).generate(PIXELS)
    assert len(out) == 3
    assert all(len(c) == 4 and len(set(c)) == 4 for c in out)


def test_greedy_gives_one_candidate(models_dir: Path):
    out = captioner(models_dir, "greedy", num_candidates=4).generate(PIXELS)
    assert [len(c) for c in out] == [1, 1, 1]


def test_diverse_beam_search_diversifies_where_beam_search_repeats(models_dir: Path):
    beam = captioner(models_dir, "beam", num_candidates=4).generate(PIXELS)
    dbs = captioner(models_dir, "diverse_beam", num_candidates=4, beams_per_group=2, diversity_penalty=5.0).generate(PIXELS)
    for b, d in zip(beam, dbs):
        assert distinct_ngram_ratio(d, 2) > distinct_ngram_ratio(b, 2)
        first_words = [c.split()[0] if c else "" for c in d]
        assert len(set(first_words)) == 4  # each group opened with a word no earlier group used
    # plain beam search: near-duplicates that share most of their words
    assert np.mean([distinct_ngram_ratio(b, 2) for b in beam]) < 0.5


def test_diverse_beam_takes_one_distinct_candidate_per_group():
    """A group whose beams both repeat earlier picks takes a beam an earlier group left unused (the demo captioner
    repeated a candidate on one test scene in 60 before); a repeat only when no distinct beam is left."""
    assert one_per_group([["A", "C"], ["B", "A"], ["A", "B"]]) == ["A", "B", "C"]
    assert one_per_group([["A", "B"], ["A", "C"], ["D", "A"]]) == ["A", "C", "D"]  # own next-best before a spare
    assert one_per_group([["A", "B"], ["B", "A"], ["A", "B"]]) == ["A", "B", "A"]  # two distinct beams, three groups
    assert one_per_group([["A"]]) == ["A"]


def test_rerank_picks_the_highest_scoring_candidate(models_dir: Path):
    clip = ClipScorer(model_name="demo-tiny-clip", pretrained=str(build_random_checkpoint(models_dir / "clip.pt")), num_workers=0)
    images = clip.encode_texts(["a red square", "a blue circle"])  # any unit vectors stand in for images
    candidates = [["a red square", "", "a dog"], ["a blue circle", "a cat", "a red square"]]
    scores, best, emb = rerank(images, candidates, clip)
    for s, b in zip(scores, best):
        assert b == int(np.argmax(s)) and np.isfinite(s[b])
    assert scores[0][1] == -np.inf  # the empty candidate is never chosen
    assert best.tolist() == [0, 0]  # an image's own text wins
    assert emb.shape == (2, 128)


def test_templates_render_exactly():
    item = FusionInput("Eiffel Tower at night, Paris 2019", "a tall metal tower lit up at night", "objects: tower; visible text: \"PARIS\"")
    assert render_prompt("veclip_v1", item) == (
        "Rewrite the following two descriptions of one image as a single coherent caption.\n"
        "Keep the concrete visual content of the model caption and the named entities of the web alt-text that are consistent with it; "
        "drop anything that contradicts the visual content.\n"
        "Web alt-text: Eiffel Tower at night, Paris 2019\n"
        "Model caption: a tall metal tower lit up at night\n"
        "Caption:"
    )
    fusecap = render_prompt("fusecap_v1", item)
    assert fusecap.endswith('Vision experts: objects: tower; visible text: "PARIS"\nCaption:')
    caps = render_prompt("capsfusion_v1", FusionInput("alt", "syn"))
    assert "Sentence 1: alt\nSentence 2: syn\n" in caps
    with pytest.raises(ValueError, match="does not exist"):
        render_prompt("capsfusion_v9", item)


def test_rule_fuser():
    item = FusionInput("Eiffel Tower, Paris.", "a tall tower at night.")
    assert rule_fuse(item, True, ocr_text="PARIS") == 'a tall tower at night, Eiffel Tower, Paris, with the text "PARIS"'
    assert rule_fuse(item, False) == "a tall tower at night"
    # an alt-text that says nothing the synthetic caption does not is left out; a quoted word is not repeated
    lazy = FusionInput("a picture of a red circle", "a large red circle on the left on a blue background")
    assert rule_fuse(lazy, True) == "a large red circle on the left on a blue background"
    worded = FusionInput('a red circle with the word "OPEN"', "a large red circle on the left on a blue background")
    assert rule_fuse(worded, True, ocr_text="OPEN") == 'a large red circle on the left on a blue background, with the text "OPEN"'
    assert rule_fuse(FusionInput("red circle", ""), True) == "red circle"
    # an alt-text that restates the caption and disagrees on one shape is not appended (no list twice, no heart and
    # cross at once); its quoted word still is
    syn = "a green background with a small white square on the left, a small orange cross at the bottom and a large black triangle on the right"
    restated = FusionInput("a small white square on the left, a small orange heart at the bottom and a large black triangle on green", syn)
    assert rule_fuse(restated, True) == syn
    quoting = FusionInput('a small white square, a small orange heart and a large black triangle with the word "TAXI"', syn)
    assert rule_fuse(quoting, True) == syn + ', with the text "TAXI"'
    adds = FusionInput("a small orange heart on a poster for the Lisbon book fair", syn)  # mostly new: appended
    assert rule_fuse(adds, True) == syn + ", a small orange heart on a poster for the Lisbon book fair"


SOURCES = ["Eiffel Tower at night, Paris 2019", "a tall metal tower lit up at night", ""]
G = Guardrails(min_words=3, max_words=20, score_margin=0.02)


@pytest.mark.parametrize(
    "fused, score, reason",
    [
        ("", 0.5, "empty"),
        (None, 0.5, "empty"),
        ("a tower", 0.5, "too_short"),
        (" ".join(f"tower{i}" for i in range(80)), 0.5, "too_long"),
        ("I'm sorry, I cannot describe this image.", 0.5, "refusal"),
        ("Sentence 1: the Eiffel Tower at night", 0.5, "prompt_echo"),
        ("The Eiffel Tower in London at night", 0.5, "hallucinated_entity"),
        ("The Eiffel Tower at night in 2021", 0.5, "hallucinated_entity"),
        ("The Eiffel Tower in Paris lit up at night", 0.27, "low_score"),
        ("The Eiffel Tower in Paris lit up at night, 2019", 0.29, None),
    ],
)
def test_guardrails(fused, score, reason):
    assert reject_reason(fused, SOURCES, score, 0.30, G) == reason


def test_phrasing_noise_is_the_quantile_of_the_score_gap_between_two_true_phrasings():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    # second phrasing = the first turned a little towards another direction: a known score gap per image
    gaps = np.linspace(0.0, 0.2, 200)
    first = img.copy()
    second = img - gaps[:, None] * img  # scores 1 and 1 - gap (not renormalised: the gap is exact)
    got = phrasing_noise(img, np.stack([first, second], axis=1), q=0.9)
    assert got == pytest.approx(np.quantile(gaps, 0.9))
    assert phrasing_noise(img, np.stack([first, first], axis=1)) == 0.0


def test_sentence_initial_capitals_are_not_entities():
    assert unsupported_entities("A tall tower. The lights are on", ["a tall tower with lights on"]) == []


class Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions stub with a fixed latency and scripted failures."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real servers (vLLM/uvicorn) do
    disable_nagle_algorithm = True  # headers and body go out without waiting on a delayed ACK
    latency = 0.05
    active = 0
    peak = 0
    lock = threading.Lock()
    calls: dict[str, int] = {}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        with Stub.lock:
            Stub.active += 1
            Stub.peak = max(Stub.peak, Stub.active)
            Stub.calls[prompt] = Stub.calls.get(prompt, 0) + 1
            n = Stub.calls[prompt]
        try:
            time.sleep(Stub.latency)
            if "SLOW" in prompt:
                time.sleep(1.0)
            if "FLAKY" in prompt and n == 1:
                return self._send(500, b"{}")
            if "GARBAGE" in prompt:
                return self._send(200, b"<html>not json</html>")
            answer = "a fused caption for " + prompt.split("Sentence 2: ")[1].split("\n")[0]
            self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode())
        finally:
            with Stub.lock:
                Stub.active -= 1

    def _send(self, code: int, payload: bytes):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Stub.calls, Stub.peak = {}, 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_concurrency_retries_and_per_record_fallback(stub_url: str):
    fuser = CaptionFuser(backend="openai", endpoint_url=stub_url, model="stub", max_concurrency=8, timeout_s=0.5, max_retries=1)
    fuser.setup_for_execution()
    items = [FusionInput(f"alt {i}", f"syn {i}") for i in range(16)]
    items += [FusionInput("alt", "SLOW one"), FusionInput("alt", "GARBAGE one"), FusionInput("alt", "FLAKY one")]
    out = fuser.fuse(items)
    fuser.teardown_after_execution()
    assert out[:16] == [(f"a fused caption for syn {i}", None) for i in range(16)]
    assert out[16] == (None, "endpoint_timeout")
    assert out[17] == (None, "endpoint_garbage")
    assert out[18] == ("a fused caption for FLAKY one", None)  # retried after a 500
    assert 2 <= Stub.peak <= 8  # concurrent, and bounded


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="backend='vllm'"):
        CaptionFuser(backend="vllm").validate()
    with pytest.raises(ValueError, match="endpoint_url"):
        CaptionFuser(backend="openai").validate()
    with pytest.raises(ValueError, match="decoding='topk'"):
        Captioner(model="demo", decoding="topk").setup_for_execution()


def test_transformers_backend_with_a_local_chat_model(tmp_path: Path):
    tiny_chat_model(tmp_path / "llm")
    fuser = CaptionFuser(backend="transformers", model=str(tmp_path / "llm"), max_new_tokens=5, batch_size=2, device="cpu")
    fuser.setup_for_execution()
    out = fuser.fuse([FusionInput("the tower", "a tower at night"), FusionInput("a", "b"), FusionInput("c", "d")])
    assert len(out) == 3 and all(isinstance(t, str) and err is None for t, err in out)
