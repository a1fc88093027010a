"""``CaptionFuser``: an instruct LLM that merges alt-text, synthetic caption and expert facts.

Backends share one interface, ``fuse(items) -> [(text | None, error | None)]``:

- ``rules``: deterministic, no model (demo profile, and what the asset falls back to);
- ``transformers``: a local causal LM with its chat template, batched left-padded generation;
- ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, TGI, ...), requests sent
  concurrently (bounded), each retried on timeouts and 5xx, failing per record with a reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from caption_assets.fusion import FusionInput, load_template, render_prompt
from resources.torch_device import resolve_device, torch_dtype

log = logging.getLogger(__name__)
BACKENDS = ("rules", "transformers", "openai")


@lru_cache(maxsize=2)
def load_causal_lm(source: str, device: str, precision: str) -> tuple[Any, Any]:
    from huggingface_hub.utils import disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer

    disable_progress_bars()  # no download bars in run logs
    local = {"local_files_only": Path(source).is_dir()}  # a local folder never asks the hub
    tok = AutoTokenizer.from_pretrained(source, **local)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, **local).to(device).eval()
    if device.startswith("cuda") and precision != "fp32":
        model.to(torch_dtype(precision))
    return model, tok


class CaptionFuser(ConfigurableResource):
    backend: str = "rules"
    template: str = "capsfusion_v1"
    model: str = ""  # transformers: HF id or folder; openai: the served model name
    endpoint_url: str | None = None  # e.g. http://vllm:8000/v1
    api_key: str | None = None
    max_concurrency: int = 16
    timeout_s: float = 30.0
    max_retries: int = 2
    max_backoff_s: float = 2.0  # retries wait 0.2 s, 0.4 s, ... up to this (a restarting server needs several)
    max_new_tokens: int = 96
    temperature: float = 0.0
    batch_size: int = 8
    device: str = "auto"
    precision: str = "bf16"

    _session: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext | None = None) -> None:
        self.validate()
        if self.backend == "openai":
            self._session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=self.max_concurrency, pool_maxsize=self.max_concurrency)
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)

    def teardown_after_execution(self, context: InitResourceContext | None = None) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"fuser backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
        load_template(self.template)
        if self.backend == "openai" and not self.endpoint_url:
            raise ValueError("fuser backend=openai needs endpoint_url (CAPTION_ASSETS_FUSER_URL)")
        if self.backend == "transformers" and not self.model:
            raise ValueError("fuser backend=transformers needs model (an HF id or a local folder)")

    def model_id(self) -> str:
        return f"{self.backend}:{self.model or 'rules'}:{self.template}"

    def fuse(self, items: Sequence[FusionInput]) -> list[tuple[str | None, str | None]]:
        """One (fused text, error reason) per item; ``rules`` returns ``(None, None)`` (the caller fuses)."""
        if self.backend == "rules" or not items:
            return [(None, None)] * len(items)
        prompts = [render_prompt(self.template, it) for it in items]
        if self.backend == "openai":
            return self._fuse_http(prompts)
        return self._fuse_local(prompts)

    # ---------------------------------------------------------------- OpenAI-compatible endpoint

    def _fuse_http(self, prompts: Sequence[str]) -> list[tuple[str | None, str | None]]:
        if self._session is None:
            self.setup_for_execution()
        with ThreadPoolExecutor(max(1, self.max_concurrency)) as pool:
            return list(pool.map(self._request, prompts))

    def _request(self, prompt: str) -> tuple[str | None, str | None]:
        url = self.endpoint_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": self.temperature, "max_tokens": self.max_new_tokens}
        error = "endpoint_error"
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._session.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.Timeout:
                error = "endpoint_timeout"
            except requests.RequestException:
                error = "endpoint_error"
            else:
                if resp.status_code >= 500 or resp.status_code == 429:
                    error = "endpoint_error"
                elif resp.status_code >= 400:
                    return None, "endpoint_error"
                else:
                    try:
                        text = resp.json()["choices"][0]["message"]["content"]
                        if not isinstance(text, str):
                            raise TypeError("content is not text")
                        return text.strip(), None
                    except (ValueError, KeyError, IndexError, TypeError):
                        return None, "endpoint_garbage"
            if attempt < self.max_retries:
                time.sleep(min(0.2 * 2**attempt, self.max_backoff_s))
        return None, error

    # ---------------------------------------------------------------- local transformers causal LM

    def _fuse_local(self, prompts: Sequence[str]) -> list[tuple[str | None, str | None]]:
        import torch

        device = resolve_device(self.device)
        model, tok = load_causal_lm(self.model, device, self.precision)
        out: list[tuple[str | None, str | None]] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s : s + self.batch_size]
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                     temperature=self.temperature or None, pad_token_id=tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            out += [(t.strip(), None) for t in tok.batch_decode(new, skip_special_tokens=True)]
        return out
