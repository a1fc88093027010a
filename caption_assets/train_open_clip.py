"""Train open_clip on the export with open_clip's own training script, with one reader fix applied.

    python -m caption_assets.train_open_clip --dataset-type webdataset \\
        --train-data "data/lake/compressed_dataset/shard-{00000..00001}.tar" --train-num-samples 115 \\
        --model ViT-B-32 --device cpu ...          # any other open_clip_train.main flag, unchanged

Why not ``python -m open_clip_train.main`` itself: since webdataset 0.2.96 (the first release after 0.2.86),
``tar_file_expander`` ends every shard with an end-of-shard marker (``eof_value={}``), and open_clip_train
(3.3.0, the newest release; its main branch too) groups files with its own ``group_by_keys_nothrow``, which
reads ``sample["fname"]`` and stops on the marker with ``KeyError: 'fname'`` (open_clip issue 935, webdataset
issue 384). webdataset 0.2.86 has no marker, but this project needs webdataset >= 0.2.90 for its own reading,
so no pair of releases works in one environment.
This module applies the fix the maintainers gave in those threads, ``tar_file_expander(..., eof_value=None)``,
by putting its own ``tarfile_to_samples_nothrow`` in ``open_clip_train.data`` (a picklable object, so
dataloader workers get it whatever their start method), then hands the remaining flags to
``open_clip_train.main.main``. ``tests/test_training_clients.py`` checks that open_clip's own reader still
fails on the marker: when it no longer does, this module can go.

Flags of its own, taken out before open_clip parses the rest:

  --caption-member MEMBER   the tar member that is the caption: ``txt`` (the final caption, the default) or
                            ``alt.txt`` (the alt-text, written when the export's ``veclip_export`` is on)
  --alt-text-prob P         VeCLIP-style mixed training: each time a sample is read, its caption is the
                            alt-text with probability P, the final caption otherwise
  --model-config PATH.json  an open_clip model config (open_clip's JSON format) registered under the file's
                            stem, as the project registers its own (``clip_models.register_config``; a name
                            open_clip already knows keeps its config); repeatable
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from caption_assets.clip_models import register_config


class TarSamples:
    """open_clip_train's ``tarfile_to_samples_nothrow`` without webdataset's end-of-shard marker, and with the caption chosen."""

    def __init__(self, caption_member: str = "txt", alt_text_prob: float = 0.0):
        if not 0.0 <= alt_text_prob <= 1.0:
            raise ValueError(f"--alt-text-prob must be in [0, 1], got {alt_text_prob}")
        self.caption_member = caption_member
        self.alt_text_prob = alt_text_prob

    def __call__(self, src: Iterable[dict[str, Any]], handler=None) -> Iterator[dict[str, Any]]:
        from open_clip_train import data
        from webdataset.tariterators import tar_file_expander, url_opener

        handler = handler or data.log_and_continue
        files = tar_file_expander(url_opener(src, handler=handler), handler=handler, eof_value=None)
        for sample in data.group_by_keys_nothrow(files, handler=handler):
            yield self.caption(sample)

    def caption(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Put the chosen caption under ``txt``, the member open_clip's pipeline reads."""
        member = self.caption_member
        if member == "txt" and self.alt_text_prob and random.random() < self.alt_text_prob:
            member = "alt.txt"
        if member != "txt":
            if member not in sample:
                raise KeyError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no {member!r} member "
                               "(the export writes alt.txt only when veclip_export is on)")
            sample["txt"] = sample[member]
        return sample


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev off: open_clip's --model must not read as an abbreviation of --model-config
    p = argparse.ArgumentParser(prog="python -m caption_assets.train_open_clip", add_help=False, allow_abbrev=False,
                                description="open_clip_train.main on a caption-assets export; every other flag goes to open_clip.")
    p.add_argument("--caption-member", default="txt", help="tar member used as the caption: txt (final caption) or alt.txt (alt-text)")
    p.add_argument("--alt-text-prob", type=float, default=0.0, help="VeCLIP mixing: probability of the alt-text per sample read")
    p.add_argument("--model-config", action="append", default=[], metavar="PATH.json", help="register an open_clip model config under its file stem")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = _parser().parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        _parser().print_help()
        print("\nopen_clip_train.main's own flags follow.\n")
    if ours.caption_member != "txt" and ours.alt_text_prob:
        raise SystemExit("--alt-text-prob mixes the alt-text into the final caption (txt): use it without --caption-member")
    for path in ours.model_config:
        register_config(Path(path).stem, json.loads(Path(path).read_text()))

    from open_clip_train import data
    from open_clip_train.main import main as open_clip_main

    data.tarfile_to_samples_nothrow = TarSamples(ours.caption_member, ours.alt_text_prob)  # read by get_wds_dataset at call time
    open_clip_main(rest)


if __name__ == "__main__":
    main()
