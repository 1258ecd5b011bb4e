"""Qwen2-VL / Qwen2.5-VL with VLMEvalKit's Qwen2-VL prompts, under the paper's or the hf protocol.

Both protocols prompt alike (``Qwen2VLPromptMixin``, the same strings as the original's
``qwen2_vl/prompt.py``); the paper's differs in its image size bounds, generation length,
dtype and attention (``protocols.DEFAULTS``, resolved once per model by ``protocols.resolve``) and in
decoding the answer without stripping it, as the original did.
"""
from __future__ import annotations

from vlmeval.vlm.qwen2_vl.model import Qwen2VLChat
from vlmeval.vlm.qwen2_vl.prompt import Qwen2VLPromptMixin

from SequentialPrune.evaluation.protocols import OCRBENCH_MIN_PIXELS
from SequentialPrune.evaluation.setting import ModelRun

from .base import VLMEvalKitPrunedModel, set_qwen_prompt_state


class QwenVLSeqPrune(VLMEvalKitPrunedModel, Qwen2VLChat):
    """Qwen2-VL / Qwen2.5-VL with VLMEvalKit's Qwen2-VL prompts (``Qwen2VLPromptMixin``)."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    FAMILY = "qwen"
    PROTOCOLS = ("paper", "hf")

    def __init__(self, run: ModelRun, system_prompt=None, **kwargs):
        self.protocol = run.get("protocol")
        self.ocrbench_min_pixels = run.get("ocrbench_min_pixels", OCRBENCH_MIN_PIXELS)
        # Qwen2VLChat.__init__ needs nvidia-smi and flash-attn; set what its prompt methods read instead.
        Qwen2VLPromptMixin.__init__(self, use_custom_prompt=run.get("use_custom_prompt", True))
        set_qwen_prompt_state(self, run.get("min_pixels"), run.get("max_pixels"), system_prompt)
        self._load_pruned(run)

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
