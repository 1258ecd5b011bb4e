"""VLMEvalKit model classes running stock Hugging Face VLMs under SequentialPrune, and their registry.

Prompts are VLMEvalKit's own: ``LlavaSeqPrune`` reuses ``LLaVA_Next``'s prompt
methods and ``QwenVLSeqPrune`` reuses ``Qwen2VLChat``'s prompt mixin and content
preparation. Only loading and generation are ours: the stock ones hard-code
CUDA, fp16/flash-attn or LLaVA-NeXT classes, and know nothing of pruning.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.llava.llava import LLaVA_Next
from vlmeval.vlm.qwen2_vl.model import Qwen2VLChat
from vlmeval.vlm.qwen2_vl.prompt import Qwen2VLPromptMixin

from SequentialPrune import PruneConfig, apply_pruning

from prefill_timer import PrefillTimer
from row_guard import RowGuard
from sample_stats import STATS_DIR, SampleTracker, StatsLog

log = logging.getLogger("seqprune")

# LLaVA-1.5's (Vicuna v1) system prompt, which VLMEvalKit's LLaVA-1.5 wrapper also puts first.
LLAVA_SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the human's questions.")
DEFAULT_MAX_NEW_TOKENS = 2048  # VLMEvalKit's default for both wrappers


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on GPU (the papers' setting), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


class PrunedGenerationMixin:
    """Loading, pruning, prefill timing and per-sample stats shared by the model classes."""

    MODEL_CLASSES: Dict[str, str] = {}  # config.model_type -> transformers class name

    def _load_pruned(self, model_path: str, prune: PruneConfig, attn_impl: str, stats_dir: str,
                     model_name: str, max_new_tokens: Optional[int], expect_sys_length: Optional[int],
                     expect_image_tokens: Optional[int]) -> None:
        import transformers
        from transformers import AutoConfig, AutoProcessor

        self.model_path, self.prune, self.model_name = model_path, prune, model_name
        self.device = default_device()
        self.dtype = default_dtype(self.device)
        model_type = AutoConfig.from_pretrained(model_path).model_type
        if model_type not in self.MODEL_CLASSES:
            raise ValueError(f"{type(self).__name__} runs {sorted(self.MODEL_CLASSES)} checkpoints; "
                             f"{model_path} is {model_type!r}")
        cls = getattr(transformers, self.MODEL_CLASSES[model_type])
        self.processor = AutoProcessor.from_pretrained(model_path)
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"the processor of {model_path} has no chat template")
        # Left padding: the pruning score is read from the last position.
        self.processor.tokenizer.padding_side = "left"
        self.model = cls.from_pretrained(model_path, dtype=self.dtype, attn_implementation=attn_impl,
                                         device_map=self.device).eval()
        self.pruner = apply_pruning(self.model, prune)
        self.timer = PrefillTimer(self.model, self._on_prefill)  # after the pruner: sees its stats
        self.tracker = SampleTracker()
        self.stats_log = StatsLog(stats_dir)
        self.row_guard = RowGuard.beside(stats_dir)  # a bad row becomes a recorded failure, not a lost dataset
        self.expect = (expect_sys_length, expect_image_tokens)
        self._warned = set()
        self._first_prefill = None
        self.max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        self.generate_kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens)
        log.info("%s: %s (%s, %s, %s), pruning %s", model_name, model_path, cls.__name__, self.dtype,
                 attn_impl, prune.tag())

    # --- which sample is running (VLMEvalKit does not pass the index to generate)
    def set_dump_image(self, dump_image_func):
        super().set_dump_image(dump_image_func)
        self.tracker.watch(getattr(dump_image_func, "__self__", None), self.row_guard)

    def build_prompt(self, line, dataset=None):
        self.tracker.note(line, dataset)
        return self.row_guard.build_prompt(super().build_prompt, line, dataset)

    def generate(self, message, dataset=None):
        return self.row_guard.generate(super().generate, message, dataset)

    # --- generation with stats
    def _on_prefill(self, seconds: float, call: int) -> None:
        if call == 1:
            self._first_prefill = (seconds, self.pruner.stats.to_dict())

    def _check_lengths(self, input_ids: torch.Tensor) -> Tuple[int, int]:
        """(tokens before the first image token, image tokens) of row 0; warn once per mismatch with the flags."""
        visual = torch.isin(input_ids[0], self.pruner.visual_ids.to(input_ids.device))
        n_img = int(visual.sum())
        sys_len = int(visual.nonzero()[0, 0]) if n_img else -1
        for flag, want, got in (("--fast-v-sys-length", self.expect[0], sys_len),
                                ("--fast-v-image-token-length", self.expect[1], n_img)):
            if want is not None and want != got and (flag, got) not in self._warned:
                self._warned.add((flag, got))
                warnings.warn(f"{flag} {want} does not match the prompt: found {got} (image tokens are located from "
                              "the token ids, so the value found is used)")
        return sys_len, n_img

    def _generate(self, inputs, dataset) -> torch.Tensor:
        """Generate for one sample, log its stats, return the new token ids of row 0."""
        index = self.tracker.take(dataset)
        sys_len, n_img = self._check_lengths(inputs["input_ids"])
        kwargs = dict(self.generate_kwargs)
        if self.prune.cache_mode == "recompute" and self.prune.prunes:
            kwargs["use_cache"] = False
        self.timer.reset()
        self._first_prefill = None
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        total = time.perf_counter() - t0
        new = out[0, inputs["input_ids"].shape[1]:]
        prefill_s, stats = self._first_prefill or (None, self.pruner.stats.to_dict())
        self.stats_log.write(dict(
            dataset=dataset, index=index, model=self.model_name, setting=self.prune.tag(),
            prefill_time_s=prefill_s, prefill_calls=len(self.timer.times), generate_time_s=total,
            new_tokens=int(new.numel()), tokens_before_image=sys_len, num_layers=self.pruner.num_layers,
            device=self.device, dtype=str(self.dtype).replace("torch.", ""), **stats))
        if n_img and stats.get("n_image_tokens") != n_img:
            raise RuntimeError(f"the pruner saw {stats.get('n_image_tokens')} image tokens, the prompt has {n_img}")
        return new

    def _decode(self, ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


class LlavaSeqPrune(PrunedGenerationMixin, LLaVA_Next):
    """llava-hf LLaVA-1.5 (``LlavaForConditionalGeneration``) with VLMEvalKit's LLaVA prompts."""

    INSTALL_REQ = False
    INTERLEAVE = True
    MODEL_CLASSES = {"llava": "LlavaForConditionalGeneration"}

    def __init__(self, model_path="llava-hf/llava-1.5-7b-hf", *, prune: PruneConfig, attn_impl="sdpa",
                 stats_dir=STATS_DIR, model_name="llava_seqprune", max_new_tokens=None,
                 expect_sys_length=None, expect_image_tokens=None, system_prompt=LLAVA_SYSTEM_PROMPT, **kwargs):
        BaseModel.__init__(self)  # not LLaVA_Next.__init__: it loads LLaVA-NeXT classes onto CUDA
        self.system_prompt = system_prompt
        self._load_pruned(model_path, prune, attn_impl, stats_dir, model_name, max_new_tokens,
                          expect_sys_length, expect_image_tokens)

    def generate_inner(self, message, dataset=None):
        content, images = [], []
        for msg in message:
            if msg["type"] == "text":
                content.append({"type": "text", "text": msg["value"]})
            else:
                content.append({"type": "image"})
                images.append(Image.open(msg["value"]).convert("RGB"))
        conversation = [{"role": "user", "content": content}]
        if self.system_prompt:
            conversation.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        # Keywords: transformers 5 takes images first, so positional (prompt, images) breaks.
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        answer = self._decode(self._generate(inputs, dataset))
        return self.output_process(answer).replace("<unk>", "").strip()


class QwenVLSeqPrune(PrunedGenerationMixin, Qwen2VLChat):
    """Qwen2-VL / Qwen2.5-VL with VLMEvalKit's Qwen2-VL prompts (``Qwen2VLPromptMixin``)."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration",
                     "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}

    def __init__(self, model_path="Qwen/Qwen2-VL-2B-Instruct", *, prune: PruneConfig, attn_impl="sdpa",
                 stats_dir=STATS_DIR, model_name="qwen2vl_seqprune", max_new_tokens=None,
                 expect_sys_length=None, expect_image_tokens=None, min_pixels=None, max_pixels=None,
                 use_custom_prompt=True, system_prompt=None, **kwargs):
        # Qwen2VLChat.__init__ needs nvidia-smi and flash-attn; set what its prompt methods read instead.
        Qwen2VLPromptMixin.__init__(self, use_custom_prompt=use_custom_prompt)
        self.min_pixels, self.max_pixels, self.total_pixels = min_pixels, max_pixels, None
        self.fps, self.nframe, self.FRAME_FACTOR = 2, 128, 2
        self.system_prompt, self.verbose, self.post_process = system_prompt, False, False
        self.use_audio_in_video = self.use_vllm = self.use_lmdeploy = False
        self._load_pruned(model_path, prune, attn_impl, stats_dir, model_name, max_new_tokens,
                          expect_sys_length, expect_image_tokens)

    def generate_inner(self, message, dataset=None):
        from qwen_vl_utils import process_vision_info

        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": self._prepare_content(message, dataset=dataset)})
        text = self.processor.apply_chat_template([messages], tokenize=False, add_generation_prompt=True)
        images, videos = process_vision_info([messages])[:2]
        inputs = self.processor(text=text, images=images, videos=videos, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return self._decode(self._generate(inputs, dataset))


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelSpec:
    """One model name we register (before the pruning tag is appended)."""
    family: str                  # key of FAMILIES
    default_path: str            # hub id used when --model-path is not given
    num_layers: int              # decoder layers of default_path, for the static schedule check
    vlmeval_twin: Optional[str] = None  # VLMEvalKit entry whose image settings we inherit


FAMILIES = {"llava": LlavaSeqPrune, "qwen": QwenVLSeqPrune}

MODELS: Dict[str, ModelSpec] = {
    "llava_seqprune": ModelSpec("llava", "llava-hf/llava-1.5-7b-hf", 32),
    "llava_seqprune_13b": ModelSpec("llava", "llava-hf/llava-1.5-13b-hf", 40),
    "qwen2vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2-VL-2B-Instruct", 28, "Qwen2-VL-2B-Instruct"),
    "qwen2vl_seqprune_7b": ModelSpec("qwen", "Qwen/Qwen2-VL-7B-Instruct", 28, "Qwen2-VL-7B-Instruct"),
    "qwen2_5vl_seqprune": ModelSpec("qwen", "Qwen/Qwen2.5-VL-7B-Instruct", 28, "Qwen2.5-VL-7B-Instruct"),
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
    from vlmeval.config import supported_VLM

    spec = MODELS[base]
    kw = {}
    twin = supported_VLM.get(spec.vlmeval_twin) if spec.vlmeval_twin else None
    if twin is not None:
        kw.update({k: v for k, v in twin.keywords.items() if k in TWIN_KEYS})
    kw.update(model_path=setting.model_path or spec.default_path, prune=setting.prune,
              attn_impl=setting.attn_impl, stats_dir=str(Path(run_dir) / STATS_DIR),
              model_name=registered_name(base, setting.prune), max_new_tokens=setting.max_new_tokens,
              expect_sys_length=setting.expect_sys_length, expect_image_tokens=setting.expect_image_tokens)
    if spec.family == "qwen":
        for key in ("min_pixels", "max_pixels"):
            if getattr(setting, key) is not None:
                kw[key] = getattr(setting, key)
    return kw


def register(base: str, setting, work_dir: str) -> str:
    """Add ``base`` under ``setting`` to VLMEvalKit's ``supported_VLM``; return the registered name."""
    from vlmeval.config import supported_VLM

    name = registered_name(base, setting.prune)
    kw = model_kwargs(base, setting, str(Path(work_dir) / name))
    supported_VLM[name] = partial(FAMILIES[MODELS[base].family], **kw)
    return name


def checkpoint_layers(base: str, model_path: Optional[str]) -> Tuple[int, str]:
    """(decoder layers, model_type) of the checkpoint, read from its config before any weights load."""
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
    return int(text.num_hidden_layers), cfg.model_type
