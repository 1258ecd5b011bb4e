"""Input and decoding protocols, and how a run's model flags resolve under them.

``paper`` is what the original research code (LeeBumSeok/Tokenpruning @ 0898f4a) fed
and asked of its models; ``hf`` is the checkpoint's chat template and processor
defaults with VLMEvalKit's settings. :func:`resolve` turns a model's family, the flags
and the device into the values a run uses. They all enter the run's identity
(``seqprune_setting.json``), so a default never hides what ran.

``paper_llava`` builds the paper protocol's LLaVA inputs; ``qwen_pixels`` says
which Qwen image bounds a processor really applies.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import paper_images

PROTOCOLS = ("paper", "hf")
QWEN_PIXEL = 28 * 28  # one merged 2x2 patch of 14 px: a Qwen2-VL visual token

# Greedy decoding, whatever the checkpoint's generation_config says.
GREEDY = dict(do_sample=False, num_beams=1)
# The image files the model reads: the original's dump rule (paper_images), or the harness's own files with
# images their format cannot hold (CMYK, YCbCr) converted to RGB instead of failing the row.
HARNESS_FILES = "harness-rgb"

# family -> protocol -> defaults. gpu_dtype "auto" = the checkpoint's stored dtype. ``generation``: the
# arguments passed to generate, over the checkpoint's generation_config (which supplies every other one).
DEFAULTS = {
    "llava": {
        # Original: vlmeval/vlm/llava/llava.py:77,182 (100 tokens; do_sample=False, num_beams=1, and temperature=0,
        # top_p=None, which greedy decoding never reads and transformers 5 warns about, so not passed),
        # llava/model/builder.py:58 (float16), llava/model/language_model/modeling_llama.py:520-540 (eager).
        "paper": dict(attn_impl="eager", gpu_dtype="float16", max_new_tokens=100, generation=GREEDY,
                      image_files=paper_images.RULE),
        "hf": dict(attn_impl="sdpa", gpu_dtype="bfloat16", max_new_tokens=2048, generation=GREEDY,
                   image_files=HARNESS_FILES),
    },
    "qwen": {
        # Original: vlmeval/config.py:262 (pixels), vlmeval/vlm/qwen2_vl/model.py:40-62 (50 tokens; num_beams=1,
        # top_p=0.001, top_k=1, temperature=0.01, repetition_penalty=1.0, do_sample left to the checkpoint's
        # generation_config; custom prompts), :73-74 (torch_dtype='auto', eager).
        "paper": dict(attn_impl="eager", gpu_dtype="auto", max_new_tokens=50, min_pixels=256 * QWEN_PIXEL,
                      max_pixels=2048 * QWEN_PIXEL, use_custom_prompt=True,
                      generation=dict(num_beams=1, top_p=0.001, top_k=1, temperature=0.01, repetition_penalty=1.0),
                      image_files=paper_images.RULE),
        "hf": dict(attn_impl="sdpa", gpu_dtype="bfloat16", max_new_tokens=2048, generation=GREEDY,
                   image_files=HARNESS_FILES),
    },
}
# Families without an entry (added later) run VLMEvalKit-style defaults.
GENERIC_HF = dict(attn_impl="sdpa", gpu_dtype="bfloat16", max_new_tokens=2048, generation=GREEDY,
                  image_files=HARNESS_FILES)
# OCRBench images get this min_pixels in the original (qwen2_vl/model.py:118-122) and in VLMEvalKit 0.0.20.
OCRBENCH_MIN_PIXELS = 10 * 10 * QWEN_PIXEL


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """The hf protocol's dtype: bf16 on GPU, fp32 on CPU (half-precision matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def checkpoint_dtype(model_path: str) -> str:
    """The dtype stored in the checkpoint's config (what ``torch_dtype='auto'`` loads)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    d = getattr(cfg, "dtype", None) or getattr(getattr(cfg, "text_config", None), "dtype", None)
    if d is None:
        raise ValueError(f"{model_path} records no dtype, so --dtype auto has nothing to load; give --dtype")
    return str(d).replace("torch.", "")


def resolve(family: str, has_paper: bool, base: str, setting, model_path: str, twin: Optional[dict] = None,
            device: Optional[str] = None) -> dict:
    """The protocol values of model ``base`` (family ``family``) under ``setting``: constructor keywords.

    ``twin``: keywords of VLMEvalKit's entry of the same checkpoint (the hf protocol's image settings).
    Raises ValueError for a protocol the model has none of, or contradictory values.
    """
    device = device or default_device()
    protocol = setting.protocol or ("paper" if has_paper else "hf")
    if protocol == "paper" and not has_paper:
        raise ValueError(f"--protocol paper: the paper did not evaluate {base}, so there is no original protocol to "
                         "reproduce; use --protocol hf (and --max-new-tokens/--min-pixels/--max-pixels as needed)")
    d = DEFAULTS.get(family, {}).get(protocol, GENERIC_HF)
    out = dict(protocol=protocol, attn_impl=setting.attn_impl or d["attn_impl"],
               max_new_tokens=setting.max_new_tokens or d["max_new_tokens"], generation=dict(d["generation"]),
               image_files=d["image_files"])
    dtype = setting.dtype or (d["gpu_dtype"] if device.startswith("cuda") else "float32")
    out["dtype"] = checkpoint_dtype(model_path) if dtype == "auto" else dtype
    if family in PIXEL_FAMILIES:
        out.update(_qwen_pixels(family, protocol, d, setting, twin or {}))
    return out


PIXEL_FAMILIES = ("qwen", "qwen3")  # image sizes bounded by min/max pixels (qwen_vl_utils)


def _qwen_pixels(family: str, protocol: str, d: dict, setting, twin: dict) -> dict:
    base = d if protocol == "paper" else twin
    out = {k: getattr(setting, k) or base.get(k) for k in ("min_pixels", "max_pixels")}
    if out["min_pixels"] and out["max_pixels"] and out["min_pixels"] > out["max_pixels"]:
        raise ValueError(f"min_pixels {out['min_pixels']} > max_pixels {out['max_pixels']} (the {protocol} protocol's "
                         "value for the one not given); give both --min-pixels and --max-pixels")
    # An explicit --min-pixels applies to OCRBench too; otherwise OCRBench keeps its own, as in the original.
    # (Qwen3-VL's VLMEvalKit class sets its own OCRBench bound, for its 32 px merged patches.)
    if family == "qwen":
        out["ocrbench_min_pixels"] = setting.min_pixels or OCRBENCH_MIN_PIXELS
    if "use_custom_prompt" in base:
        out["use_custom_prompt"] = base["use_custom_prompt"]
    return out
