"""VLMEvalKit model classes running stock Hugging Face VLMs under SequentialPrune, and their registry.

Prompts are VLMEvalKit's own where it has them for the family; only loading and
generation are ours: the stock ones hard-code CUDA, fp16/flash-attn or other
classes, and know nothing of pruning. One module per family.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, Optional, Tuple

from SequentialPrune import PruneConfig

from sample_stats import STATS_DIR

from .common import default_device, default_dtype  # noqa: F401  (re-exported for launchers)
from .internvl import InternVLSeqPrune
from .llava import LlavaSeqPrune
from .llava_paper import sentencepiece_file
from .onevision import LlavaOnevisionSeqPrune
from .protocol import PIXEL_FAMILIES as PIXEL_LIMITED  # noqa: F401  (families whose --min/--max-pixels apply)
from .protocol import resolve as resolve_protocol
from .qwen import QwenVLSeqPrune
from .qwen3 import Qwen3VLSeqPrune

# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelSpec:
    """One model name we register (before the pruning tag is appended)."""
    family: str                  # key of FAMILIES
    default_path: str            # hub id used when --model-path is not given
    num_layers: int              # decoder layers of default_path, for the static schedule check
    vlmeval_twin: Optional[str] = None  # VLMEvalKit entry whose image settings we inherit
    paper_protocol: bool = False  # the paper evaluated it: --protocol paper is its default (protocol.py)


FAMILIES = {"llava": LlavaSeqPrune, "qwen": QwenVLSeqPrune, "qwen3": Qwen3VLSeqPrune,
            "onevision": LlavaOnevisionSeqPrune, "internvl": InternVLSeqPrune}

MODELS: Dict[str, ModelSpec] = {
    "llava_seqprune": ModelSpec("llava", "llava-hf/llava-1.5-7b-hf", 32, paper_protocol=True),
    "llava_seqprune_13b": ModelSpec("llava", "llava-hf/llava-1.5-13b-hf", 40, paper_protocol=True),
    "qwen2vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2-VL-2B-Instruct", 28, "Qwen2-VL-2B-Instruct", True),
    "qwen2vl_seqprune_7b": ModelSpec("qwen", "Qwen/Qwen2-VL-7B-Instruct", 28, "Qwen2-VL-7B-Instruct", True),
    "qwen2_5vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2.5-VL-7B-Instruct", 28, "Qwen2.5-VL-7B-Instruct"),
    "qwen3vl_seqprune": ModelSpec("qwen3", "Qwen/Qwen3-VL-8B-Instruct", 36, "Qwen3-VL-8B-Instruct"),
    "qwen3vl_seqprune_2b": ModelSpec("qwen3", "Qwen/Qwen3-VL-2B-Instruct", 28, "Qwen3-VL-2B-Instruct"),
    "qwen3vl_moe_seqprune": ModelSpec("qwen3", "Qwen/Qwen3-VL-30B-A3B-Instruct", 48, "Qwen3-VL-30B-A3B-Instruct"),
    "llava_onevision_seqprune": ModelSpec("onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf", 28),
    "llava_onevision_seqprune_0.5b": ModelSpec("onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", 24),
    "internvl_seqprune": ModelSpec("internvl", "OpenGVLab/InternVL3-8B-hf", 28),
    "internvl_seqprune_2b": ModelSpec("internvl", "OpenGVLab/InternVL3-2B-hf", 28),
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


def registered_name(base: str, prune: PruneConfig) -> str:
    """The model name VLMEvalKit sees and names files by: the setting is part of it, so files never mix."""
    return f"{base}_{prune.tag()}"


def model_kwargs(base: str, setting, run_dir: str) -> dict:
    """Constructor keywords of ``base`` under ``setting``, writing stats into ``run_dir``."""
    spec = MODELS[base]
    kw = protocol_of(base, setting)
    kw.update(model_path=setting.model_path or spec.default_path, prune=setting.prune,
              stats_dir=str(Path(run_dir) / STATS_DIR), model_name=registered_name(base, setting.prune),
              expect_sys_length=setting.expect_sys_length, expect_image_tokens=setting.expect_image_tokens)
    return kw


# ----------------------------------------------------------------------------- input protocol (issue 9)
def protocol_of(base: str, setting) -> dict:
    """The resolved protocol keywords of ``base`` (protocol, dtype, attention, generation length, images);
    ValueError when the flags ask for what the model cannot do."""
    from vlmeval.config import supported_VLM

    spec = MODELS[base]
    path = setting.model_path or spec.default_path
    twin = supported_VLM.get(spec.vlmeval_twin) if spec.vlmeval_twin else None
    twin_kw = {k: v for k, v in twin.keywords.items() if k in TWIN_KEYS} if twin is not None else {}
    kw = resolve_protocol(spec.family, spec.paper_protocol, base, setting, path, twin_kw)
    if spec.family == "llava" and kw["protocol"] == "paper":
        # The original tokenised with the slow (SentencePiece) tokenizer; checkpoints without one use theirs.
        kw["paper_tokenizer"] = "sentencepiece" if sentencepiece_file(path) else "checkpoint"
    return kw


def register(base: str, setting, work_dir: str) -> str:
    """Add ``base`` under ``setting`` to VLMEvalKit's ``supported_VLM``; return the registered name."""
    from vlmeval.config import supported_VLM

    name = registered_name(base, setting.prune)
    kw = model_kwargs(base, setting, str(Path(work_dir) / name))
    supported_VLM[name] = partial(FAMILIES[MODELS[base].family], **kw)
    return name


def checkpoint_layers(base: str, model_path: Optional[str]) -> Tuple[int, str, Optional[int]]:
    """(decoder layers, model_type, fixed image tokens per image or None) of the checkpoint, read from its
    config before any weights load."""
    from transformers import AutoConfig

    spec = MODELS[base]
    path = model_path or spec.default_path
    try:
        cfg = AutoConfig.from_pretrained(path)
    except Exception as e:  # offline hub id not in the cache, broken directory, ...
        raise ValueError(f"cannot read the config of {path!r} for {base}: {type(e).__name__}: {e}") from None
    allowed = FAMILIES[spec.family].MODEL_CLASSES
    if cfg.model_type not in allowed:
        raise ValueError(f"{base} runs {sorted(allowed)} checkpoints, but {path} is {cfg.model_type!r}")
    text = getattr(cfg, "text_config", cfg)
    n_fixed = None
    if cfg.model_type == "llava":  # one fixed patch grid per image (576 for LLaVA-1.5)
        v = cfg.vision_config
        n_fixed = (v.image_size // v.patch_size) ** 2
    return int(text.num_hidden_layers), cfg.model_type, n_fixed
