"""open_clip's CLIP tokenizer on the Rust ``tokenizers`` library: the same token ids, without Python BPE.

open_clip's ``SimpleTokenizer`` runs byte-pair merges in Python, one word at a time; on a CPU it costs as
much as a small text tower. ``FastClipTokenizer`` builds a ``tokenizers.Tokenizer`` from the *same*
vocabulary and merges (read off the ``SimpleTokenizer`` instance, so any CLIP vocabulary works), with
open_clip's pre-tokenisation regex, byte-level alphabet, ``</w>`` end-of-word suffix, start/end tokens,
truncation (the last kept token becomes end-of-text) and zero padding. Text cleaning stays open_clip's
own function; for plain printable ASCII without ``&`` it reduces to whitespace folding and lower-casing,
done without ftfy. ``tests/test_clip_tokenizer.py`` checks identical ids on real web alt-texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

SOT, EOT = "<start_of_text>", "<end_of_text>"
PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class FastClipTokenizer:
    """Callable like open_clip's tokenizer: ``tok(texts, context_length=None) -> LongTensor[N, context_length]``."""

    def __init__(self, slow: SimpleTokenizer):
        self.slow = slow
        self.context_length = slow.context_length or 77
        self.sot_token_id, self.eot_token_id = slow.sot_token_id, slow.eot_token_id
        merges = sorted(slow.bpe_ranks, key=slow.bpe_ranks.__getitem__)
        tok = Tokenizer(models.BPE(vocab=dict(slow.encoder), merges=list(merges), end_of_word_suffix="</w>", fuse_unk=False))
        tok.add_special_tokens([AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.TemplateProcessing(
            single=f"{SOT} $A {EOT}", special_tokens=[(SOT, self.sot_token_id), (EOT, self.eot_token_id)]
        )
        self.tok = tok

    def clean(self, text: str) -> str:
        """open_clip's 'lower' cleaning; ftfy and HTML unescaping can only change non-plain text."""
        if text.isascii() and text.isprintable() and "&" not in text:
            return " ".join(text.split()).lower()
        return self.slow.clean_fn(text)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        encoded = self.tok.encode_batch([self.clean(t) for t in texts])
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, enc in enumerate(encoded):
            ids = enc.ids
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out  # type: ignore[return-value]


def fast_tokenizer(tokenizer):
    """The Rust tokenizer for open_clip's plain CLIP tokenizer; any other tokenizer is returned unchanged."""
    if type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None and tokenizer.clean_fn.__name__ == "_clean_lower":
        return FastClipTokenizer(tokenizer)
    return tokenizer
