"""Tiny random float32 vision-language models and synthetic inputs for the core tests.

The models are built from transformers configs in memory (no download, no
tokenizer); inputs carry the real image-token layout of each family.
"""
from __future__ import annotations

import inspect

import torch
import transformers

from SequentialPrune.adapters import model_class

# The families these tiny models cover (tests/core/test_families.py checks it against the library's adapters).
FAMILIES = ("llava", "llava_next", "llava_onevision", "internvl", "qwen2_vl", "qwen2_5_vl", "qwen3_vl",
            "qwen3_vl_moe")
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")      # M-RoPE, <|vision_start|> ... <|vision_end|>
VOCAB = 160
IMAGE_ID, VIDEO_ID, VSTART_ID, VEND_ID = 150, 151, 152, 153
PAD_ID, EOS_ID = 0, 1
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=12,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=2,
            initializer_range=0.12)  # large weights: varied greedy tokens, sharp attention
# image tokens of one image (InternVL: one image = 2 tiles of 16)
TOKENS = {"llava": 64, "llava_next": 16 + 16 + 4, "llava_onevision": 16 + 16 + 4, "internvl": 32,
          "qwen2_vl": 16, "qwen2_5_vl": 16, "qwen3_vl": 16, "qwen3_vl_moe": 16}


def tiny_config(family: str, text: dict = TEXT):
    """The tiny transformers config of ``family`` (the decoder: ``text``)."""
    clip = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, patch_size=14)
    if family == "llava":
        return transformers.LlavaConfig(
            vision_config=dict(clip, image_size=112), text_config=dict(model_type="llama", **text),
            image_token_id=IMAGE_ID, vision_feature_layer=-1, vision_feature_select_strategy="default")
    if family == "llava_next":
        return transformers.LlavaNextConfig(
            vision_config=dict(clip, image_size=56), text_config=dict(model_type="llama", **text),
            image_token_id=IMAGE_ID, vision_feature_layer=-1, image_grid_pinpoints=[[56, 56]])
    qwen2_text = dict(model_type="qwen2", **text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if family == "llava_onevision":
        # SigLIP 32 px / patch 8: 4x4 per tile; a 32 px image = base 16 + one tile 16 + 4 newlines
        return transformers.LlavaOnevisionConfig(
            text_config=qwen2_text, image_token_index=IMAGE_ID, video_token_index=VIDEO_ID,
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
                               vision_use_head=False),
            vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
            image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]], tie_word_embeddings=False)
    if family == "internvl":
        # 64 px tiles / patch 8 -> 8x8 -> pixel shuffle 0.5 -> 4x4 = 16 tokens per tile
        return transformers.InternVLConfig(
            text_config=qwen2_text, image_token_id=IMAGE_ID, image_seq_length=16, downsample_ratio=0.5,
            vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               image_size=[64, 64], patch_size=[8, 8], use_qk_norm=False, norm_type="layer_norm",
                               use_mean_pooling=True),
            vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False)
    ids = dict(image_token_id=IMAGE_ID, video_token_id=VIDEO_ID, vision_start_token_id=VSTART_ID,
               vision_end_token_id=VEND_ID)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        if family == "qwen2_5_vl":
            vision = dict(depth=1, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                          window_size=56, fullatt_block_indexes=[0])
        cls = transformers.Qwen2VLConfig if family == "qwen2_vl" else transformers.Qwen2_5_VLConfig
        return cls(text_config=dict(**text, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                            "rope_theta": 10000.0}),
                   vision_config=vision, **ids)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        # patch 16, merge 2: a 128 px image is an 8x8 patch grid -> 16 tokens; DeepStack after layers 0, 1, 2
        qtext = dict(text, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [4, 2, 2], "mrope_interleaved": True})
        if family == "qwen3_vl_moe":
            qtext.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                         mlp_only_layers=[])
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1, 2])
        cls = transformers.Qwen3VLConfig if family == "qwen3_vl" else transformers.Qwen3VLMoeConfig
        return cls(text_config=qtext, vision_config=vision, tie_word_embeddings=False, **ids)
    raise ValueError(family)


def build_model(family: str, attn: str = "sdpa", seed: int = 0, num_layers: int = 12, dtype=torch.float32):
    """A tiny random model of ``family`` in eval mode."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, dict(TEXT, num_hidden_layers=num_layers))
    cfg._attn_implementation = attn
    model = model_class(family)(cfg).eval().to(dtype)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None  # random models: never stop early, compare full lengths
    return model


def image_inputs(family: str, n_images: int = 1, seed: int = 0) -> dict:
    """Pixel inputs of ``n_images`` images."""
    g = torch.Generator().manual_seed(seed)
    if family == "llava":
        return {"pixel_values": torch.randn(n_images, 3, 112, 112, generator=g)}
    if family == "llava_next":
        return {"pixel_values": torch.randn(n_images, 2, 3, 56, 56, generator=g),
                "image_sizes": torch.tensor([[56, 56]] * n_images)}
    if family == "llava_onevision":
        return {"pixel_values": torch.randn(n_images, 2, 3, 32, 32, generator=g),
                "image_sizes": torch.tensor([[32, 32]] * n_images)}
    if family == "internvl":
        return {"pixel_values": torch.randn(2 * n_images, 3, 64, 64, generator=g)}
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        return {"pixel_values": torch.randn(n_images * 64, 3 * 2 * 16 * 16, generator=g),
                "image_grid_thw": torch.tensor([[1, 8, 8]] * n_images)}
    # Qwen2-VL: a 112x112 image is an 8x8 patch grid, merged 2x2 into 16 tokens.
    return {"pixel_values": torch.randn(n_images * 64, 3 * 2 * 14 * 14, generator=g),
            "image_grid_thw": torch.tensor([[1, 8, 8]] * n_images)}


def prompt_ids(family: str, n_images: int = 1, prefix: int = 5, suffix: int = 7, seed: int = 0,
               tokens=None) -> torch.Tensor:
    """One prompt row: text, then each image's tokens (framed by start/end tokens where the family has them),
    then text. ``tokens``: each image's token count (default: the family's one-image count)."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(3, 140, (n,), generator=g).tolist()  # noqa: E731
    ids = [2] + text(prefix)
    framed = family in QWEN or family == "internvl"
    for n_tok in tokens if tokens is not None else [TOKENS[family]] * n_images:
        img = [IMAGE_ID] * n_tok
        ids += [VSTART_ID] + img + [VEND_ID] if framed else img
        ids += text(2)
    ids += text(suffix)
    return torch.tensor(ids)


def make_inputs(family: str, n_images: int = 1, batch: int = 1, suffixes=None, seed: int = 0) -> dict:
    """Model inputs: left-padded batch of prompts, each with ``n_images`` images."""
    pix = image_inputs(family, n_images * batch, seed)
    suffixes = suffixes or [7] * batch
    rows = [prompt_ids(family, n_images, suffix=s, seed=seed + r) for r, s in enumerate(suffixes)]
    width = max(len(r) for r in rows)
    ids = torch.full((batch, width), PAD_ID)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = row
        mask[r, width - len(row):] = 1
    out = {"input_ids": ids, "attention_mask": mask, **pix}
    if family in QWEN and _accepts_mm_token_type_ids(family):
        out["mm_token_type_ids"] = (ids == IMAGE_ID).long() + 2 * (ids == VIDEO_ID).long()
    return out


def _accepts_mm_token_type_ids(family: str) -> bool:
    # transformers >= 5.2x wants mm_token_type_ids for M-RoPE; older releases do not take it.
    return "mm_token_type_ids" in inspect.signature(model_class(family).forward).parameters


def split_row(inputs: dict, r: int, family: str, n_images: int = 1) -> dict:
    """Row ``r`` of a batch from :func:`make_inputs`, without its padding."""
    keep = inputs["attention_mask"][r].bool()
    out = {"input_ids": inputs["input_ids"][r:r + 1, keep], "attention_mask": inputs["attention_mask"][r:r + 1, keep]}
    per = {"internvl": 2}.get(family, 1) * n_images  # pixel rows per prompt
    if family in QWEN:
        per = 64 * n_images
        out["image_grid_thw"] = inputs["image_grid_thw"][r * n_images:(r + 1) * n_images]
        if "mm_token_type_ids" in inputs:
            out["mm_token_type_ids"] = inputs["mm_token_type_ids"][r:r + 1, keep]
    if "image_sizes" in inputs:
        out["image_sizes"] = inputs["image_sizes"][r * n_images:(r + 1) * n_images]
    out["pixel_values"] = inputs["pixel_values"][r * per:(r + 1) * per]
    return out


def make_video_inputs(family: str, seed: int = 0) -> dict:
    """A Qwen prompt with one 4-frame video: 2 temporal groups of 16 video tokens (Qwen2/2.5-VL: one run of 32;
    Qwen3-VL: a '<t seconds>' text before each group, as its processor writes)."""
    g = torch.Generator().manual_seed(seed)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        ids = [2, 10, 11, 12]
        for t in range(2):
            ids += [60 + t, 61, 62, VSTART_ID] + [VIDEO_ID] * 16 + [VEND_ID]
        pix = torch.randn(128, 3 * 2 * 16 * 16, generator=g)
    else:
        ids = [2, 10, 11, 12, VSTART_ID] + [VIDEO_ID] * 32 + [VEND_ID]
        pix = torch.randn(128, 3 * 2 * 14 * 14, generator=g)
    ids = torch.tensor([ids + [20, 21, 22, 23, 24]])
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": pix,
           "video_grid_thw": torch.tensor([[2, 8, 8]])}
    if _accepts_mm_token_type_ids(family):
        out["mm_token_type_ids"] = 2 * (ids == VIDEO_ID).long()
    return out


def row_inputs(family: str, images=1, seed: int = 0, prefix: int = 5, suffix: int = 7) -> dict:
    """One prompt alone (batch 1). ``images``: how many images, or for Qwen a list of (h, w) patch grids, one
    per image (each merged 2x2: h * w / 4 tokens), so images of several sizes give several token counts."""
    grids = images if isinstance(images, (list, tuple)) else None
    n = len(grids) if grids is not None else images
    tokens = None
    if family in QWEN:
        grids = grids if grids is not None else [(8, 8)] * n
        tokens = [h * w // 4 for h, w in grids]
    ids = prompt_ids(family, n, prefix=prefix, suffix=suffix, seed=seed, tokens=tokens)[None]
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if n:
        pix = image_inputs(family, n, seed)
        if family in QWEN:
            g = torch.Generator().manual_seed(seed)
            out["pixel_values"] = torch.randn(sum(h * w for h, w in grids), pix["pixel_values"].shape[1], generator=g)
            out["image_grid_thw"] = torch.tensor([[1, h, w] for h, w in grids])
        else:
            out.update(pix)
    if family in QWEN and _accepts_mm_token_type_ids(family):
        out["mm_token_type_ids"] = (ids == IMAGE_ID).long() + 2 * (ids == VIDEO_ID).long()
    return out


def collate(rows) -> dict:
    """Rows from :func:`row_inputs` as one left-padded batch (pixel inputs concatenated in row order)."""
    width = max(r["input_ids"].shape[1] for r in rows)
    out = {}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in rows[0]:
            pad = PAD_ID if key == "input_ids" else 0
            out[key] = torch.stack([torch.cat([torch.full((width - r[key].shape[1],), pad, dtype=r[key].dtype),
                                               r[key][0]]) for r in rows])
    for key in ("pixel_values", "image_grid_thw", "image_sizes"):
        parts = [r[key] for r in rows if key in r]
        if parts:
            out[key] = torch.cat(parts)
    return out
