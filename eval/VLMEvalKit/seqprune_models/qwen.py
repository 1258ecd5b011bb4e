"""Qwen2-VL / Qwen2.5-VL with VLMEvalKit's Qwen2-VL prompts, under the paper's or the hf protocol.

Both protocols prompt alike (``Qwen2VLPromptMixin``, the same strings as the original's
``qwen2_vl/prompt.py``); the paper's differs in its image size bounds, generation length,
dtype and attention (``protocol.DEFAULTS``, resolved by ``protocol.resolve``) and in
decoding the answer without stripping it, as the original did.
"""
from __future__ import annotations

from vlmeval.vlm.qwen2_vl.model import Qwen2VLChat
from vlmeval.vlm.qwen2_vl.prompt import Qwen2VLPromptMixin

from SequentialPrune import PruneConfig

from sample_stats import STATS_DIR

from .common import PrunedGenerationMixin, set_qwen_prompt_state
from .protocol import OCRBENCH_MIN_PIXELS


class QwenVLSeqPrune(PrunedGenerationMixin, Qwen2VLChat):
    """Qwen2-VL / Qwen2.5-VL with VLMEvalKit's Qwen2-VL prompts (``Qwen2VLPromptMixin``)."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration",
                     "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}

    def __init__(self, model_path="Qwen/Qwen2-VL-2B-Instruct", *, prune: PruneConfig, protocol="hf", dtype=None,
                 attn_impl="sdpa", stats_dir=STATS_DIR, model_name="qwen2vl_seqprune", max_new_tokens=None,
                 expect_sys_length=None, expect_image_tokens=None, min_pixels=None, max_pixels=None,
                 ocrbench_min_pixels=OCRBENCH_MIN_PIXELS, use_custom_prompt=True, system_prompt=None, **kwargs):
        if protocol not in ("paper", "hf"):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.protocol, self.ocrbench_min_pixels = protocol, ocrbench_min_pixels
        # Qwen2VLChat.__init__ needs nvidia-smi and flash-attn; set what its prompt methods read instead.
        Qwen2VLPromptMixin.__init__(self, use_custom_prompt=use_custom_prompt)
        set_qwen_prompt_state(self, min_pixels, max_pixels, system_prompt)
        self._load_pruned(model_path, prune, attn_impl, stats_dir, model_name, max_new_tokens,
                          expect_sys_length, expect_image_tokens, dtype=dtype)

    def _prepare_content(self, inputs, dataset=None):
        content = super()._prepare_content(inputs, dataset=dataset)
        if dataset == "OCRBench":  # VLMEvalKit hard-codes 10*10*28*28 there; an explicit --min-pixels wins
            for item in content:
                if item.get("type") == "image":
                    item["min_pixels"] = self.ocrbench_min_pixels
        return content

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
        new = self._generate(inputs, dataset)
        if self.protocol == "paper":  # the original: no strip, no clean-up of tokenisation spaces
            return self.processor.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return self._decode(new)
