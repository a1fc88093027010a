"""Imported by the multiprocess executor's forkserver: the model libraries, once per run.

Every step process forks from the forkserver, so a step that loads CLIP or the captioner finds torch,
open_clip and transformers already imported instead of spending seconds importing them again.
"""

import open_clip  # noqa: F401
import torch  # noqa: F401
from transformers import AutoModelForImageTextToText, VisionEncoderDecoderModel  # noqa: F401

import caption_assets.definitions  # noqa: F401
