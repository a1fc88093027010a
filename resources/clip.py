"""``ClipScorer``: open_clip image/text embeddings and cosine scores, batched, fed by a DataLoader.

Images are decoded straight from the ``raw_pairs`` pointers inside the worker processes. The model
is loaded once per process (module-level cache behind resource setup), whatever the number of
partitions or runs in that process. The ``demo`` profile's weights are random but deterministic,
built on first use and saved as a checkpoint file that is then loaded through the same
path-to-checkpoint route a user's downloaded weights take.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from resources.torch_device import inference_mode, resolve_device, torch_dtype

if TYPE_CHECKING:  # torch and open_clip load with the model, not with the definitions (resources/torch_device.py)
    import torch
    from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

# A small open_clip architecture for the offline demo and the tests: ViT and text transformer of width 128.
DEMO_MODEL_NAME = "demo-tiny-clip"
DEMO_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}
LOAD_COUNT = {"n": 0}  # how many times a model was actually built in this process (tests read it)
_lock = threading.Lock()


def register_demo_config(name: str = DEMO_MODEL_NAME, config: dict[str, Any] | None = None) -> None:
    """Make a small architecture known to open_clip under ``name`` (its model-config registry)."""
    from caption_assets.clip_models import register_config

    register_config(name, config or DEMO_MODEL_CONFIG)


def build_random_checkpoint(path: Path, model_name: str = DEMO_MODEL_NAME, seed: int = 0) -> Path:
    """Random-weight checkpoint, deterministic for (model_name, seed), saved with torch.save.

    Scores from these weights MEAN NOTHING; they exist so every code path runs offline.
    """
    import torch

    from caption_assets.clip_models import untrained_clip

    register_demo_config()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = untrained_clip(model_name)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "note": "RANDOM WEIGHTS (demo): scores mean nothing"}, tmp)
    tmp.replace(path)
    return path


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on the tokens up to the batch's last end-of-text, not the full context.

    CLIP's text tower is causal and pools at the end-of-text token, so positions after it never reach
    the output: cutting them gives the same embeddings for a fraction of the work (alt-texts and
    captions fill ~15-25 of 77 positions). Same steps as open_clip's ``CLIP.encode_text``, with the
    positional embedding and attention mask cut to length; other model classes run unchanged.
    """
    import open_clip
    import torch
    from open_clip.transformer import text_global_pool

    if type(model) is not open_clip.CLIP or model.text_pool_type != "argmax" or model.attn_mask is None:
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1  # the end-of-text token has the highest id
    if length >= tokens.shape[1]:
        return model.encode_text(tokens)
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, model.text_pool_type)
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


@lru_cache(maxsize=4)
def load_clip(model_name: str, pretrained: str, device: str, precision: str) -> tuple[torch.nn.Module, Callable, Callable]:
    """(model, image preprocess, tokenizer), built once per process for a given configuration.

    A checkpoint file may carry its architecture beside it (``<model_name>.json`` in the same folder,
    open_clip's model-config format): it is registered with ``open_clip.add_model_config`` first.
    """
    import open_clip

    from caption_assets.clip_tokenizer import fast_tokenizer

    register_demo_config()
    config = Path(pretrained).parent / f"{model_name}.json"
    if config.is_file() and model_name not in open_clip.list_models():
        open_clip.add_model_config(config)
    LOAD_COUNT["n"] += 1
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    model.eval()
    if device.startswith("cuda") and precision != "fp32":
        model = model.to(torch_dtype(precision))
    return model, preprocess, fast_tokenizer(open_clip.get_tokenizer(model_name))


class ClipScorer(ConfigurableResource):
    """open_clip scorer. ``pretrained``: an open_clip tag, a local checkpoint path, or ``demo``."""

    model_name: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64
    num_workers: int = 2
    models_dir: str = "data/models"

    _model: Any = PrivateAttr(default=None)
    _preprocess: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _device: str = PrivateAttr(default="cpu")

    def setup_for_execution(self, context: InitResourceContext | None = None) -> None:
        self.load()

    def checkpoint(self) -> str:
        """What ``pretrained`` resolves to: the demo checkpoint path, a local file, or a tag."""
        if self.pretrained == "demo":
            path = Path(self.models_dir) / f"{self.model_name}-random-seed0.pt"
            with _lock:
                if not path.exists():
                    build_random_checkpoint(path, self.model_name)
            return str(path.resolve())
        return self.pretrained

    def load(self) -> None:
        if self._model is None:
            self._device = resolve_device(self.device)
            self._model, self._preprocess, self._tokenizer = load_clip(self.model_name, self.checkpoint(), self._device, self.precision)

    @property
    def model(self) -> torch.nn.Module:
        self.load()
        return self._model

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else int(self.model.embed_dim)

    def model_id(self) -> str:
        return f"{self.model_name}:{Path(self.pretrained).name if self.pretrained != 'demo' else 'demo-random-seed0'}"

    def _autocast(self):
        import torch

        if self._device.startswith("cuda") and self.precision != "fp32":
            return torch.autocast("cuda", dtype=torch_dtype(self.precision))
        return torch.autocast("cpu", enabled=False)

    @inference_mode
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 [N, D]."""
        self.load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(list(texts[start : start + self.batch_size])).to(self._device)
            out.append(self._run(lambda t: encode_text_trimmed(self._model, t), tokens))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    @inference_mode
    def encode_images(self, refs: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised image embeddings float32 [N, D], ok mask [N]) read from shard pointers."""
        from resources.pointer_data import PointerImages

        self.load()
        embs, oks = [], []
        for pixels, ok in self._loader(PointerImages(refs, self._preprocess, _image_size(self._preprocess))):
            pixels = pixels.to(self._device, non_blocking=True)
            embs.append(self._run(lambda p: self._model.encode_image(p), pixels))
            oks.append(ok.numpy())
        if not embs:
            return np.zeros((0, self.embed_dim), np.float32), np.zeros(0, bool)
        return np.concatenate(embs), np.concatenate(oks)

    @inference_mode
    def encode_pairs(self, refs: Sequence[tuple], captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over (image pointer, caption) pairs: (image emb, text emb, image-ok mask), float32, L2-normalised."""
        from resources.pointer_data import PointerPairs

        self.load()
        dataset = PointerPairs(refs, captions, self._preprocess, self._tokenizer, _image_size(self._preprocess))
        imgs, txts, oks = [], [], []
        for pixels, tokens, ok in self._loader(dataset):
            imgs.append(self._run(lambda p: self._model.encode_image(p), pixels.to(self._device, non_blocking=True)))
            txts.append(self._run(lambda t: encode_text_trimmed(self._model, t), tokens.to(self._device, non_blocking=True)))
            oks.append(ok.numpy())
        if not imgs:
            empty = np.zeros((0, self.embed_dim), np.float32)
            return empty, empty, np.zeros(0, bool)
        return np.concatenate(imgs), np.concatenate(txts), np.concatenate(oks)

    def _loader(self, dataset: Dataset) -> DataLoader:
        from resources.pointer_data import pointer_loader

        return pointer_loader(dataset, self.batch_size, self.num_workers, self._device)

    def _run(self, fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> np.ndarray:
        """Forward a batch; on CUDA out-of-memory, split it in halves and retry (no record lost)."""
        import torch

        try:
            with self._autocast():
                emb = fn(batch)
            return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            log.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
            return np.concatenate([self._run(fn, batch[:half]), self._run(fn, batch[half:])])


def _image_size(preprocess: Callable) -> int:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if size is not None:
            return int(size if isinstance(size, int) else size[0])
    return 224
