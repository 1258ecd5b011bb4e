"""InternVL (-hf checkpoints) with VLMEvalKit's ``InternVLChat`` prompts and tile budgets."""
from __future__ import annotations

from PIL import Image
from vlmeval.vlm.base import BaseModel
from vlmeval.vlm.internvl.internvl_chat import InternVLChat
from vlmeval.vlm.internvl.utils import reorganize_prompt

from SequentialPrune import PruneConfig

from sample_stats import STATS_DIR

from .common import PrunedGenerationMixin


class InternVLSeqPrune(PrunedGenerationMixin, InternVLChat):
    """InternVL3 ``-hf`` (``InternVLForConditionalGeneration``): VLMEvalKit's InternVL prompts
    (``build_prompt``, ``reorganize_prompt``) and per-dataset tile budgets (``set_max_num``), run through the
    transformers processor and chat template instead of the remote-code ``model.chat``. Greedy decoding."""

    INSTALL_REQ = False
    INTERLEAVE = True
    VIDEO_LLM = False
    MODEL_CLASSES = {"internvl": "InternVLForConditionalGeneration"}

    def __init__(self, model_path="OpenGVLab/InternVL3-8B-hf", *, prune: PruneConfig, protocol="hf", dtype=None,
                 attn_impl="sdpa", stats_dir=STATS_DIR, model_name="internvl_seqprune", max_new_tokens=None,
                 expect_sys_length=None, expect_image_tokens=None, use_custom_prompt=True, **kwargs):
        BaseModel.__init__(self)  # not InternVLChat.__init__: remote code, CUDA
        # what InternVLChat's prompt methods read
        self._use_custom_prompt, self.use_mpo_prompt, self.use_cot = use_custom_prompt, False, False
        self.use_postprocess, self.cot_prompt, self.system_prompt, self.screen_parse = False, None, None, False
        self.kwargs, self.version, self.best_of_n = {}, "V2.0", 1
        if protocol != "hf":  # protocol.resolve refuses "paper" for models the paper did not run
            raise ValueError(f"{type(self).__name__} runs the hf protocol only, got {protocol!r}")
        self._load_pruned(model_path, prune, attn_impl, stats_dir, model_name, max_new_tokens,
                          expect_sys_length, expect_image_tokens, dtype=dtype)

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
