"""InternVL (-hf checkpoints) with VLMEvalKit's ``InternVLChat`` prompts and tile budgets."""
from __future__ import annotations

from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.internvl.internvl_chat import InternVLChat
from vlmeval.vlm.internvl.utils import reorganize_prompt

from SequentialPrune.evaluation.setting import ModelRun

from .base import VLMEvalKitPrunedModel


class InternVLSeqPrune(VLMEvalKitPrunedModel, InternVLChat):
    """InternVL3 ``-hf`` (``InternVLForConditionalGeneration``): VLMEvalKit's InternVL prompts
    (``build_prompt``, ``reorganize_prompt``) and per-dataset tile budgets (``set_max_num``), run through the
    transformers processor and chat template instead of the remote-code ``model.chat``. Greedy decoding."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    FAMILY = "internvl"
    PROTOCOLS = ("hf",)  # protocols.resolve refuses "paper" for models the paper did not run

    def __init__(self, run: ModelRun, **kwargs):
        BaseModel.__init__(self)  # not InternVLChat.__init__: remote code, CUDA
        # what InternVLChat's prompt methods read
        self._use_custom_prompt, self.use_mpo_prompt, self.use_cot = run.get("use_custom_prompt", True), False, False
        self.use_postprocess, self.cot_prompt, self.system_prompt, self.screen_parse = False, None, None, False
        self.kwargs, self.version, self.best_of_n = {}, "V2.0", 1
        self._load_pruned(run)

    def generate_inner(self, message, dataset=None):
        self.set_max_num(dataset)
        paths = [m["value"] for m in message if m["type"] == "image"]
        # VLMEvalKit's prompt text, with "<image>" where each image goes
        text = reorganize_prompt(message, len(paths), dataset=dataset) if paths else \
            "\n".join(m["value"] for m in message if m["type"] == "text")
        content = []
        for i, piece in enumerate(text.split("<image>")):
            if i:
                content.append({"type": "image"})
                piece = piece[1:] if piece.startswith("\n") else piece  # the chat template ends an image with \n
            if piece:
                content.append({"type": "text", "text": piece})
        if sum(c["type"] == "image" for c in content) != len(paths):
            raise ValueError(f"the InternVL prompt has {text.count('<image>')} image places for {len(paths)} images")
        prompt = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        images = [Image.open(p).convert("RGB") for p in paths]
        max_num = max(1, min(self.max_num, self.total_max_num // max(1, len(paths))))
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt",
                                **({"max_patches": max_num} if images else {})).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return self._decode(self._generate(inputs, dataset))
