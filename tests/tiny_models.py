"""Tiny random float32 vision-language models and synthetic inputs for the core tests.

The models are built from transformers configs in memory (no download, no
tokenizer); inputs carry the real image-token layout of each family.
"""
from __future__ import annotations

import torch
from transformers import (
    LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration,
    Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
)

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")
VOCAB = 160
IMAGE_ID, VIDEO_ID, VSTART_ID, VEND_ID = 150, 151, 152, 153
PAD_ID, EOS_ID = 0, 1
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=12,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=2,
            initializer_range=0.12)  # large weights: varied greedy tokens, sharp attention


def build_model(family: str, attn: str = "sdpa", seed: int = 0, num_layers: int = 12):
    """A tiny random model of ``family`` in eval mode."""
    torch.manual_seed(seed)
    text = dict(TEXT, num_hidden_layers=num_layers)
    if family == "llava":
        cfg = LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, image_size=112, patch_size=14),
            text_config=dict(model_type="llama", **text),
            image_token_id=IMAGE_ID, vision_feature_layer=-1, vision_feature_select_strategy="default")
        cls = LlavaForConditionalGeneration
    elif family == "llava_next":
        cfg = LlavaNextConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14),
            text_config=dict(model_type="llama", **text),
            image_token_id=IMAGE_ID, vision_feature_layer=-1, image_grid_pinpoints=[[56, 56]])
        cls = LlavaNextForConditionalGeneration
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        if family == "qwen2_5_vl":
            vision = dict(depth=1, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                          window_size=56, fullatt_block_indexes=[0])
        cfg_cls = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
        cfg = cfg_cls(
            text_config=dict(**text, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                      "rope_theta": 10000.0}),
            vision_config=vision, image_token_id=IMAGE_ID, video_token_id=VIDEO_ID,
            vision_start_token_id=VSTART_ID, vision_end_token_id=VEND_ID)
        cls = Qwen2VLForConditionalGeneration if family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    else:
        raise ValueError(family)
    cfg._attn_implementation = attn
    model = cls(cfg).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None  # random models: never stop early, compare full lengths
    return model


def image_inputs(family: str, n_images: int = 1, seed: int = 0):
    """Pixel inputs and the number of image tokens each image expands to."""
    g = torch.Generator().manual_seed(seed)
    if family == "llava":
        return {"pixel_values": torch.randn(n_images, 3, 112, 112, generator=g)}, 64
    if family == "llava_next":
        return {"pixel_values": torch.randn(n_images, 2, 3, 56, 56, generator=g),
                "image_sizes": torch.tensor([[56, 56]] * n_images)}, None
    # Qwen2-VL: a 112x112 image is an 8x8 patch grid, merged 2x2 into 16 tokens.
    return {"pixel_values": torch.randn(n_images * 64, 3 * 2 * 14 * 14, generator=g),
            "image_grid_thw": torch.tensor([[1, 8, 8]] * n_images)}, 16


def prompt_ids(family: str, n_image_tokens: int, n_images: int = 1, prefix: int = 5, suffix: int = 7,
               seed: int = 0) -> torch.Tensor:
    """One prompt row: text, then each image's tokens (with Qwen's vision start/end), then text."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(3, 140, (n,), generator=g).tolist()
    ids = [2] + text(prefix)
    for _ in range(n_images):
        if family.startswith("qwen"):
            ids += [VSTART_ID] + [IMAGE_ID] * n_image_tokens + [VEND_ID]
        else:
            ids += [IMAGE_ID] * n_image_tokens
        ids += text(2)
    ids += text(suffix)
    return torch.tensor(ids)


def make_inputs(family: str, n_images: int = 1, batch: int = 1, suffixes=None, seed: int = 0) -> dict:
    """Model inputs: left-padded batch of prompts, each with ``n_images`` images."""
    pix, per_image = image_inputs(family, n_images * batch, seed)
    if family == "llava_next":
        per_image = llava_next_tokens()
    suffixes = suffixes or [7] * batch
    rows = [prompt_ids(family, per_image, n_images, suffix=s, seed=seed + r) for r, s in enumerate(suffixes)]
    width = max(len(r) for r in rows)
    ids = torch.full((batch, width), PAD_ID)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = row
        mask[r, width - len(row):] = 1
    out = {"input_ids": ids, "attention_mask": mask, **pix}
    if family.startswith("qwen") and _accepts_mm_token_type_ids(family):
        out["mm_token_type_ids"] = (ids == IMAGE_ID).long() + 2 * (ids == VIDEO_ID).long()
    return out


def _accepts_mm_token_type_ids(family: str) -> bool:
    # transformers >= 5.2x wants mm_token_type_ids for M-RoPE; older releases do not take it.
    import inspect
    cls = Qwen2VLForConditionalGeneration if family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    return "mm_token_type_ids" in inspect.signature(cls.forward).parameters


def llava_next_tokens() -> int:
    """Image tokens of one 56x56 LLaVA-NeXT image in the tiny config (base + one tile + newlines)."""
    # base 4x4 = 16, the 56x56 pinpoint tile is unpadded 4x4 = 16 plus 4 newline tokens
    return 16 + 16 + 4


def split_row(inputs: dict, r: int, family: str, n_images: int = 1) -> dict:
    """Row ``r`` of a batch from :func:`make_inputs`, without its padding."""
    keep = inputs["attention_mask"][r].bool()
    out = {"input_ids": inputs["input_ids"][r:r + 1, keep], "attention_mask": inputs["attention_mask"][r:r + 1, keep]}
    if family == "llava":
        out["pixel_values"] = inputs["pixel_values"][r * n_images:(r + 1) * n_images]
    else:
        out["pixel_values"] = inputs["pixel_values"][r * n_images * 64:(r + 1) * n_images * 64]
        out["image_grid_thw"] = inputs["image_grid_thw"][r * n_images:(r + 1) * n_images]
        if "mm_token_type_ids" in inputs:
            out["mm_token_type_ids"] = inputs["mm_token_type_ids"][r:r + 1, keep]
    return out


def make_video_inputs(family: str, seed: int = 0) -> dict:
    """A Qwen prompt with one 4-frame 112x112 video: a 2x8x8 patch grid, merged into 32 video tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[2, 10, 11, 12, VSTART_ID] + [VIDEO_ID] * 32 + [VEND_ID, 20, 21, 22, 23, 24]])
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
           "pixel_values_videos": torch.randn(128, 3 * 2 * 14 * 14, generator=g),
           "video_grid_thw": torch.tensor([[2, 8, 8]])}
    if _accepts_mm_token_type_ids(family):
        out["mm_token_type_ids"] = 2 * (ids == VIDEO_ID).long()
    return out
