"""Device, precision and inference-mode helpers that import torch only when a model is used.

The model resources' classes are imported wherever the definitions are built (the webserver, the
daemon, every run worker); keeping torch, open_clip and transformers out of that import lets a code
location load in seconds, and only the steps that run a model pay for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_dtype(precision: str) -> Any:
    """``fp32`` / ``fp16`` / ``bf16`` -> the torch dtype."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def inference_mode(fn: F) -> F:
    """``torch.inference_mode()`` as a decorator that imports torch on the first call, not at class definition."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
