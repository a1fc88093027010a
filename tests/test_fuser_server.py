"""The ``openai`` fuser backend against a real OpenAI-compatible server on loopback (``transformers serve``).

The stub server in ``test_captioning`` checks retries and bounds against scripted failures; this one checks that
what a served checkpoint returns is what the same checkpoint generates in-process, and that a run outlives a
server restart. The models are a tiny local Llama chat checkpoint (``tests.helpers.tiny_chat_model``) and the
demo's trained world-fuser (``data/demo_models/world-fuser``); nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from caption_assets.fusion import FusionInput
from caption_assets.world.models import FUSER_FOLDER
from resources.fuser import CaptionFuser
from tests.helpers import Server, free_port, tiny_chat_model

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ITEMS = [FusionInput(f"the tower {'at night ' * (i % 3)}", f"a caption of the tower {'merge ' * (i % 4)}") for i in range(24)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model = tiny_chat_model(root / "chat-model")
    server = Server(model, free_port(), root / "serve.log")
    server.start()
    yield model, server
    server.stop()


def in_process(model: Path) -> list[tuple[str | None, str | None]]:
    fuser = CaptionFuser(backend="transformers", model=str(model), max_new_tokens=6, batch_size=5, device="cpu", precision="fp32")
    fuser.setup_for_execution()
    return fuser.fuse(ITEMS)


def http_fuser(model: Path, server: Server, **kw) -> tuple[CaptionFuser, dict]:
    """An ``openai`` fuser whose session counts requests and the most in flight at once."""
    fuser = CaptionFuser(backend="openai", endpoint_url=server.url, model=str(model), max_new_tokens=6, **kw)
    fuser.setup_for_execution()
    seen = {"posts": 0, "now": 0, "peak": 0}
    lock = threading.Lock()
    post = fuser._session.post

    def counted(*args, **kwargs):
        with lock:
            seen["posts"] += 1
            seen["now"] += 1
            seen["peak"] = max(seen["peak"], seen["now"])
        try:
            return post(*args, **kwargs)
        finally:
            with lock:
                seen["now"] -= 1

    fuser._session.post = counted
    return fuser, seen


def test_served_greedy_outputs_equal_in_process_ones_with_bounded_concurrency(served):
    model, server = served
    want = in_process(model)
    fuser, seen = http_fuser(model, server, max_concurrency=3)
    got = fuser.fuse(ITEMS)
    fuser.teardown_after_execution()
    assert all(err is None and text for text, err in want)
    assert got == want
    assert seen["posts"] == len(ITEMS) and 2 <= seen["peak"] <= 3


def test_a_run_outlives_a_server_restart(served):
    """The server goes down before the run and comes back during it: every record is retried until it answers."""
    model, server = served
    want = in_process(model)
    server.stop()
    fuser, seen = http_fuser(model, server, max_concurrency=4, max_retries=400, max_backoff_s=0.5, timeout_s=30.0)
    result: list = []
    run = threading.Thread(target=lambda: result.append(fuser.fuse(ITEMS)))
    run.start()
    time.sleep(2.0)  # every worker is now retrying a refused connection
    assert run.is_alive() and seen["posts"] > 4
    server.start()
    run.join(timeout=240)
    fuser.teardown_after_execution()
    assert not run.is_alive()
    assert result[0] == want
    assert seen["posts"] > len(ITEMS)  # the refused attempts were retried, not failed


@pytest.mark.skipif(not FUSER_FOLDER.is_dir(), reason="the demo's world-fuser is not in this checkout")
def test_the_demo_fuser_served_answers_what_it_fuses_in_process(tmp_path):
    """Real weights behind the server: the demo's world-fuser on held-out world prompts, greedy, whole captions."""
    from caption_assets.world.train_fuser import examples

    data = [e for e in examples("test", 60) if e.carried][:4] + examples("test", 12)
    items = [e.inputs for e in data]
    local = CaptionFuser(backend="transformers", model=str(FUSER_FOLDER), template="fusecap_v1", max_new_tokens=64, batch_size=8, device="cpu", precision="fp32")
    local.setup_for_execution()
    want = local.fuse(items)
    server = Server(FUSER_FOLDER, free_port(), tmp_path / "serve.log")
    server.start()
    try:
        fuser = CaptionFuser(backend="openai", endpoint_url=server.url, model=str(FUSER_FOLDER), template="fusecap_v1", max_new_tokens=64, max_concurrency=4)
        fuser.setup_for_execution()
        got = fuser.fuse(items)
        fuser.teardown_after_execution()
    finally:
        server.stop()
    assert got == want
    assert all(f'"{e.scene.word}"' in (text or "") for (text, _), e in zip(want, data) if e.carried)  # the word an input carried
