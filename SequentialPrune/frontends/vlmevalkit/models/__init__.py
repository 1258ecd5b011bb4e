"""VLMEvalKit model classes running stock Hugging Face VLMs under SequentialPrune, and their registration.

Prompts are VLMEvalKit's own where it has them for the family; only loading and
generation are ours (the core's ``PrunedModel``): the stock ones hard-code CUDA,
fp16/flash-attn or other classes, and know nothing of pruning. One module per
family; each class says its family (``FAMILY``), and this registry is built
from those.
"""
from __future__ import annotations

from functools import partial
from typing import Dict

from SequentialPrune.evaluation.catalog import MODELS
from SequentialPrune.evaluation.resolve import resolve_model
from SequentialPrune.evaluation.setting import EvalSetting, ModelRun

from .internvl import InternVLSeqPrune
from .llava import LlavaSeqPrune
from .onevision import LlavaOnevisionSeqPrune
from .qwen import QwenVLSeqPrune
from .qwen3 import Qwen3VLSeqPrune

CLASSES = {c.FAMILY: c for c in (LlavaSeqPrune, QwenVLSeqPrune, Qwen3VLSeqPrune, LlavaOnevisionSeqPrune,
                                 InternVLSeqPrune)}

# VLMEvalKit's entry of the same checkpoint, whose image settings the hf protocol inherits.
VLMEVAL_TWINS: Dict[str, str] = {
    "qwen2vl_seqprune": "Qwen2-VL-2B-Instruct",
    "qwen2vl_seqprune_7b": "Qwen2-VL-7B-Instruct",
    "qwen2_5vl_seqprune": "Qwen2.5-VL-7B-Instruct",
    "qwen3vl_seqprune": "Qwen3-VL-8B-Instruct",
    "qwen3vl_seqprune_2b": "Qwen3-VL-2B-Instruct",
    "qwen3vl_moe_seqprune": "Qwen3-VL-30B-A3B-Instruct",
}

# The original research commands named VLMEvalKit's stock models; with --use-fast-v they mean ours.
ORIGINAL_MODEL_NAMES = {
    "llava_v1.5_7b": "llava_seqprune",
    "llava_v1.5_13b": "llava_seqprune_13b",
    "Qwen2-VL-2B-Instruct": "qwen2vl_seqprune",
    "Qwen2-VL-7B-Instruct": "qwen2vl_seqprune_7b",
    "Qwen2.5-VL-7B-Instruct": "qwen2_5vl_seqprune",
}

# Keywords of a VLMEvalKit twin entry that describe inputs, not the loading we replace.
TWIN_KEYS = ("min_pixels", "max_pixels", "use_custom_prompt")


def twin_keywords(base: str) -> dict:
    """The input keywords of VLMEvalKit's entry for the checkpoint of ``base`` ({} if it has none)."""
    from vlmeval.config import supported_VLM

    twin = supported_VLM.get(VLMEVAL_TWINS[base]) if base in VLMEVAL_TWINS else None
    return {k: v for k, v in twin.keywords.items() if k in TWIN_KEYS} if twin is not None else {}


def resolve(base: str, setting: EvalSetting, work_dir: str) -> ModelRun:
    """Our model ``base`` resolved under ``setting``, with VLMEvalKit's image settings for its checkpoint."""
    return resolve_model(base, setting, work_dir, twin_keywords(base))


def register(run: ModelRun) -> str:
    """Add ``run``'s model to VLMEvalKit's ``supported_VLM`` under its name (which carries the pruning tag)."""
    from vlmeval.config import supported_VLM

    supported_VLM[run.name] = partial(CLASSES[run.family], run=run)
    return run.name


__all__ = ["CLASSES", "MODELS", "ORIGINAL_MODEL_NAMES", "VLMEVAL_TWINS", "register", "resolve", "twin_keywords"]
