"""Datasets that decode images straight from ``raw_pairs`` pointers inside DataLoader workers."""

from __future__ import annotations

import io
import multiprocessing
import sys
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from caption_assets.readers import read_image_bytes


class PointerImages(Dataset):
    """Decode + preprocess images from (container, path, member, offset, length) pointers."""

    def __init__(self, refs: Sequence[tuple], preprocess: Callable, image_size: int):
        self.refs, self.preprocess, self.size = refs, preprocess, image_size

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            with Image.open(io.BytesIO(read_image_bytes(*self.refs[i]))) as im:
                im.draft("RGB", (self.size, self.size))  # JPEG: decode at 1/2..1/8 scale when that still covers the model's input
                return self.preprocess(im.convert("RGB")), True
        except Exception:  # noqa: BLE001 - the shard changed since ingest; the caller quarantines the row
            return torch.zeros(3, self.size, self.size), False


class PointerPairs(PointerImages):
    """Image pixels and caption tokens together: tokenizing (Python BPE) runs in the workers too."""

    def __init__(self, refs: Sequence[tuple], captions: Sequence[str], preprocess: Callable, tokenizer: Callable, image_size: int):
        super().__init__(refs, preprocess, image_size)
        self.captions, self.tokenizer = captions, tokenizer

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, bool]:  # type: ignore[override]
        pixels, ok = super().__getitem__(i)
        return pixels, self.tokenizer([self.captions[i]])[0], ok


def worker_init(_: int) -> None:
    """One torch thread per worker: the workers decode, the main process runs the model."""
    torch.set_num_threads(1)




def worker_context() -> multiprocessing.context.BaseContext | None:
    """Fork the decode workers on Linux, whatever the process's default start method.

    Dagster's multiprocess executor starts each step with ``spawn``, and a spawned process spawns its
    DataLoader workers too: each one re-imports torch and open_clip and unpickles the dataset, for every
    call. On a 2-core machine that made scoring 12x slower inside a step than in a plain process
    (bench/peers.py). The workers only decode and tokenise (no CUDA), so forking them is safe.
    """
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def pointer_loader(dataset: Dataset, batch_size: int, num_workers: int, device: str) -> DataLoader:
    """Batches from worker processes; no worker pool for a single batch (it costs more than it saves)."""
    workers = num_workers if len(dataset) > batch_size else 0  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        multiprocessing_context=worker_context() if workers else None,
        pin_memory=device.startswith("cuda"),
        worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
