"""``Captioner``: synthetic captions from a transformers image-to-text model, several per image.

Decoding: greedy, beam, diverse beam search (groups + Hamming penalty, ``caption_assets.decoding``)
and nucleus sampling. The model (an HF id or a local folder: BLIP, GIT, Florence-2-style, or a
VisionEncoderDecoder) is loaded once per process with ``AutoModelForImageTextToText``; the demo
profile builds a tiny random-weight VisionEncoderDecoder on first use, saves it with
``save_pretrained`` and loads it back through that same call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from caption_assets.consensus import SELECTIONS
from resources.torch_device import inference_mode, resolve_device, torch_dtype

if TYPE_CHECKING:  # torch and transformers load with the model, not with the definitions
    import torch

log = logging.getLogger(__name__)
DECODING_MODES = ("greedy", "beam", "diverse_beam", "sampling")
LOAD_COUNT = {"n": 0}
_lock = threading.Lock()

# Words the demo tokenizer knows: enough for captions to look like captions. Weights are random.
DEMO_VOCAB_TEXT = """a an the of on in with and at near under over by to from its two three red green blue yellow purple
white black grey orange brown striped small large old new round square circle triangle background photo picture image
cat dog man woman person people astronaut rocket coffee cup saucer spoon table motorcycle garage workshop galaxy galaxies
space sky telescope retina eye cells tissue microscope camera tripod moon surface craters coins page book text brick wall
grass gravel stones pebbles ground flag helmet suit launch pad city street car tree flower water beach mountain building
looking standing sitting lying parked holding posing seen close-up view top side front dark bright light"""


def build_demo_captioner(folder: Path, seed: int = 0) -> Path:
    """A tiny ViT -> GPT-2 VisionEncoderDecoder with a word-level tokenizer. RANDOM WEIGHTS."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.utils import logging as hf_logging
    from transformers import GPT2Config, PreTrainedTokenizerFast, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor

    hf_logging.disable_progress_bar()
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([DEMO_VOCAB_TEXT], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[BOS]", "[EOS]", "[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")
    enc = ViTConfig(image_size=64, patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    dec = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=2, add_cross_attention=True, is_decoder=True,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(cfg)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp)
    (tmp / "README.md").write_text("Demo captioner: RANDOM WEIGHTS. Captions from it mean nothing.\n")
    tmp.rename(folder)
    return folder


@lru_cache(maxsize=2)
def load_captioner(source: str, device: str, precision: str) -> tuple[Any, Any, Any]:
    """(model, image processor, tokenizer), once per process per configuration."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from huggingface_hub.utils import disable_progress_bars

    LOAD_COUNT["n"] += 1
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in run logs
    disable_progress_bars()  # nor download bars
    local = {"local_files_only": Path(source).is_dir()}  # a local folder never asks the hub (the demo runs offline)
    model = AutoModelForImageTextToText.from_pretrained(source, **local)
    proc = AutoProcessor.from_pretrained(source, **local)
    image_processor = getattr(proc, "image_processor", None) or AutoImageProcessor.from_pretrained(source, **local)
    tokenizer = getattr(proc, "tokenizer", None) or AutoTokenizer.from_pretrained(source, **local)
    model.to(device).eval()
    if device.startswith("cuda") and precision != "fp32":
        model.to(torch_dtype(precision))
    return model, image_processor, tokenizer


class Captioner(ConfigurableResource):
    """Image-to-text captioner with candidate decoding. ``model``: HF id, local folder, or ``demo``."""

    model: str = "Salesforce/blip-image-captioning-large"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 16
    num_workers: int = 2
    decoding: str = "diverse_beam"
    num_candidates: int = 4
    selection: str = "clip"  # which candidate recaptioned_pairs keeps: "clip" (best score) or "consensus" (MBR)
    beams_per_group: int = 2
    diversity_penalty: float = 1.0
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 30
    prompt: str | None = None
    seed: int = 0
    models_dir: str = "data/models"

    _model: Any = PrivateAttr(default=None)
    _image_processor: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _device: str = PrivateAttr(default="cpu")

    def setup_for_execution(self, context: InitResourceContext | None = None) -> None:
        if self.decoding not in DECODING_MODES:
            raise ValueError(f"captioner decoding={self.decoding!r} is not one of {', '.join(DECODING_MODES)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"captioner selection={self.selection!r} is not one of {', '.join(SELECTIONS)}")
        self.load()

    def source(self) -> str:
        if self.model == "demo":
            folder = Path(self.models_dir) / "demo-captioner-random-seed0"
            with _lock:
                if not folder.exists():
                    build_demo_captioner(folder)
            return str(folder.resolve())
        return self.model

    def load(self) -> None:
        if self._model is None:
            self._device = resolve_device(self.device)
            self._model, self._image_processor, self._tokenizer = load_captioner(self.source(), self._device, self.precision)

    def model_id(self) -> str:
        if self.model == "demo":
            return "demo-captioner-random-seed0"
        return Path(self.model).name if Path(self.model).is_dir() else self.model

    def _pixels(self, im):
        return self._image_processor(images=im, return_tensors="pt")["pixel_values"][0]

    def caption_images(self, refs: Sequence[tuple]) -> tuple[list[list[str]], np.ndarray]:
        """``num_candidates`` captions per image pointer, and the mask of images that decoded."""
        from resources.pointer_data import PointerImages, pointer_loader

        self.load()
        size = int(getattr(self._model.config, "encoder", self._model.config).__dict__.get("image_size", 224) or 224)
        dataset = PointerImages(refs, self._pixels, size)
        out: list[list[str]] = []
        oks = []
        for pixels, ok in pointer_loader(dataset, self.batch_size, self.num_workers, self._device):
            out += self.generate(pixels)
            oks.append(ok.numpy())
        return out, (np.concatenate(oks) if oks else np.zeros(0, bool))

    @inference_mode
    def generate(self, pixel_values: torch.Tensor) -> list[list[str]]:
        """Candidates for a batch of preprocessed images, in decoding order (group order for DBS)."""
        import torch

        dtype = torch_dtype(self.precision) if self._device.startswith("cuda") else torch.float32
        inputs = {"pixel_values": pixel_values.to(self._device, dtype=dtype), **self._prompt_inputs(len(pixel_values))}
        n = self.num_candidates
        common = {"max_new_tokens": self.max_new_tokens}
        torch.manual_seed(self.seed)
        if self.decoding == "greedy" or n == 1 and self.decoding != "sampling":
            seqs = self._model.generate(**inputs, do_sample=False, num_beams=1, **common)
            return [[c] for c in self._decode(seqs)]
        if self.decoding == "beam":
            seqs = self._model.generate(**inputs, do_sample=False, num_beams=max(n, 2), num_return_sequences=n, **common)
            return _chunk(self._decode(seqs), n)
        if self.decoding == "sampling":
            seqs = self._model.generate(**inputs, do_sample=True, top_p=self.top_p, temperature=self.temperature, num_return_sequences=2 * n, **common)
            return [_first_distinct(c, n) for c in _chunk(self._decode(seqs), 2 * n)]
        return self._diverse_beam(inputs, common)

    def _diverse_beam(self, inputs: dict[str, torch.Tensor], common: dict[str, Any]) -> list[list[str]]:
        """One candidate per group: group g is a beam search penalised by groups < g (Hamming diversity)."""
        from transformers import LogitsProcessorList

        from caption_assets.decoding import HammingDiversity, StepRecorder

        k = max(self.beams_per_group, 1)
        recorders: list[StepRecorder] = []
        groups: list[list[str]] = []
        for _ in range(self.num_candidates):
            rec = StepRecorder(k)
            procs = LogitsProcessorList([HammingDiversity(list(recorders), self.diversity_penalty, k), rec])
            seqs = self._model.generate(**inputs, do_sample=False, num_beams=k, num_return_sequences=k, logits_processor=procs, **common)
            rec.finish(seqs, k)
            recorders.append(rec)
            groups.append(_chunk(self._decode(seqs), k))
        return [one_per_group([g[i] for g in groups]) for i in range(len(groups[0]) if groups else 0)]

    def _prompt_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        """PromptCap-style conditioning: the prompt starts the text the model continues."""
        if not self.prompt:
            return {}
        ids = self._tokenizer([self.prompt] * batch, return_tensors="pt", add_special_tokens=False).input_ids.to(self._device)
        if self._model.config.is_encoder_decoder:
            import torch

            start = torch.full((batch, 1), self._model.config.decoder_start_token_id, dtype=ids.dtype, device=self._device)
            return {"decoder_input_ids": torch.cat([start, ids], dim=1)}
        return {"input_ids": ids}

    def _decode(self, seqs: torch.Tensor) -> list[str]:
        texts = [" ".join(t.split()) for t in self._tokenizer.batch_decode(seqs, skip_special_tokens=True)]
        if self.prompt:
            p = " ".join(self.prompt.split()).lower()
            texts = [t[len(p):].strip() if t.lower().startswith(p) else t for t in texts]
        return texts


def one_per_group(groups: list[list[str]]) -> list[str]:
    """One image's diverse-beam candidates, one per group of beams (best first): the group's best beam, or its
    next-best when an earlier group already said the same, or else a beam an earlier group left unused. A repeat
    only when every beam of this group and the earlier ones is taken."""
    chosen: list[str] = []
    for g, beams in enumerate(groups):
        spare = (b for earlier in groups[:g] for b in earlier)
        chosen.append(next((b for b in [*beams, *spare] if b not in chosen), beams[0]))
    return chosen


def _chunk(items: list[str], n: int) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _first_distinct(items: list[str], n: int) -> list[str]:
    seen: list[str] = []
    for it in items:
        if it not in seen:
            seen.append(it)
    return (seen + items)[:n] if len(seen) < n else seen[:n]
