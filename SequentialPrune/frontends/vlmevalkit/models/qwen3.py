"""Qwen3-VL (dense and MoE) with VLMEvalKit's Qwen3-VL prompts (``Qwen3VLPromptMixin``)."""
from __future__ import annotations

from vlmeval.vlm.qwen3_vl.model import Qwen3VLChat
from vlmeval.vlm.qwen3_vl.prompt import Qwen3VLPromptMixin

from SequentialPrune.evaluation.setting import ModelRun

from .base import VLMEvalKitPrunedModel, set_qwen_prompt_state


class Qwen3VLSeqPrune(VLMEvalKitPrunedModel, Qwen3VLChat):
    """Qwen3-VL: VLMEvalKit's prompts and image preparation (patch 16; OCRBench's own min_pixels), greedy
    decoding. Loading and generation are ours: ``Qwen3VLChat.__init__`` asks for nvidia-smi and flash-attn."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    FAMILY = "qwen3"
    PROTOCOLS = ("hf",)  # protocols.resolve refuses "paper" for models the paper did not run

    def __init__(self, run: ModelRun, system_prompt=None, **kwargs):
        Qwen3VLPromptMixin.__init__(self, use_custom_prompt=run.get("use_custom_prompt", True))
        set_qwen_prompt_state(self, run.get("min_pixels"), run.get("max_pixels"), system_prompt)
        self._load_pruned(run)

    def generate_inner(self, message, dataset=None):
        from qwen_vl_utils import process_vision_info

        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": self._prepare_content(message, dataset=dataset)})
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        images, videos, video_kwargs = process_vision_info(messages, image_patch_size=16, return_video_kwargs=True,
                                                           return_video_metadata=True)
        metadata = None
        if videos is not None:
            videos, metadata = (list(x) for x in zip(*videos))
        # qwen_vl_utils already resized to multiples of 32: the processor must not resize again
        inputs = self.processor(text=text, images=images, videos=videos, video_metadata=metadata, do_resize=False,
                                return_tensors="pt", **(video_kwargs or {}))
        inputs = inputs.to(self.device)
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return self._decode(self._generate(inputs, dataset))
