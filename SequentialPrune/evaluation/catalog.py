"""The models we evaluate: our model names, their families and checkpoints, read before any weights load.

A family here is a group of checkpoints one harness model class runs (LLaVA-1.5;
Qwen2-VL and Qwen2.5-VL; ...). Its checkpoints are listed by ``model_type``; the
transformers class of each is the library's (``SequentialPrune.adapters.model_class``),
so no class name is written here, and ``tests/core/test_families.py`` checks
that every family the library prunes is here or deliberately absent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# family -> the checkpoint model_types its model class runs
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "llava": ("llava",),
    "qwen": ("qwen2_vl", "qwen2_5_vl"),
    "qwen3": ("qwen3_vl", "qwen3_vl_moe"),
    "onevision": ("llava_onevision",),
    "internvl": ("internvl",),
}


@dataclass(frozen=True)
class ModelSpec:
    """One model name we register (before the pruning tag is appended)."""
    family: str                  # key of FAMILIES
    default_path: str            # hub id used when no checkpoint path is given
    num_layers: int              # decoder layers of default_path (documentation; the checkpoint's are used)
    paper_protocol: bool = False  # the paper evaluated it: the paper protocol is its default (protocols)


MODELS: Dict[str, ModelSpec] = {
    "llava_seqprune": ModelSpec("llava", "llava-hf/llava-1.5-7b-hf", 32, paper_protocol=True),
    "llava_seqprune_13b": ModelSpec("llava", "llava-hf/llava-1.5-13b-hf", 40, paper_protocol=True),
    "qwen2vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2-VL-2B-Instruct", 28, True),
    "qwen2vl_seqprune_7b": ModelSpec("qwen", "Qwen/Qwen2-VL-7B-Instruct", 28, True),
    "qwen2_5vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2.5-VL-7B-Instruct", 28),
    "qwen3vl_seqprune": ModelSpec("qwen3", "Qwen/Qwen3-VL-8B-Instruct", 36),
    "qwen3vl_seqprune_2b": ModelSpec("qwen3", "Qwen/Qwen3-VL-2B-Instruct", 28),
    "qwen3vl_moe_seqprune": ModelSpec("qwen3", "Qwen/Qwen3-VL-30B-A3B-Instruct", 48),
    "llava_onevision_seqprune": ModelSpec("onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf", 28),
    "llava_onevision_seqprune_0.5b": ModelSpec("onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", 24),
    "internvl_seqprune": ModelSpec("internvl", "OpenGVLab/InternVL3-8B-hf", 28),
    "internvl_seqprune_2b": ModelSpec("internvl", "OpenGVLab/InternVL3-2B-hf", 28),
}


@dataclass(frozen=True)
class CheckpointInfo:
    model_type: str
    num_layers: int                      # decoder layers
    fixed_image_tokens: Optional[int]    # image tokens per image when fixed (576 for LLaVA-1.5), else None


def checkpoint_info(base: str, model_path: Optional[str]) -> CheckpointInfo:
    """What the checkpoint of ``base`` is, read from its config; ValueError if ``base`` cannot run it."""
    from transformers import AutoConfig

    spec = MODELS[base]
    path = model_path or spec.default_path
    try:
        cfg = AutoConfig.from_pretrained(path)
    except Exception as e:  # offline hub id not in the cache, broken directory, ...
        raise ValueError(f"cannot read the config of {path!r} for {base}: {type(e).__name__}: {e}") from None
    allowed = FAMILIES[spec.family]
    if cfg.model_type not in allowed:
        raise ValueError(f"{base} runs {sorted(allowed)} checkpoints, but {path} is {cfg.model_type!r}")
    text = getattr(cfg, "text_config", cfg)
    n_fixed = None
    if cfg.model_type == "llava":  # one fixed patch grid per image (576 for LLaVA-1.5)
        v = cfg.vision_config
        n_fixed = (v.image_size // v.patch_size) ** 2
    return CheckpointInfo(cfg.model_type, int(text.num_hidden_layers), n_fixed)
