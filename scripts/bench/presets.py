"""Benchmark presets: model configs at real (or CPU-sized) dimensions, random weights.

A preset names a model config and a default input layout (images per prompt,
image size). Models are built directly on the target device and dtype, so a
13B random model never needs its weights twice in CPU memory; ``--model-path``
loads real weights instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from transformers import (AutoConfig, InternVLConfig, LlavaConfig, LlavaNextConfig, LlavaOnevisionConfig,
                          Qwen2VLConfig, Qwen3VLConfig)

from SequentialPrune.adapters import model_class


@dataclass(frozen=True)
class Preset:
    """A model config plus its default input layout."""
    name: str
    config: Callable[[], object]           # builds the transformers config
    tier: str                               # "tiny" (CI), "cpu" (CPU targets) or "gpu" (needs a GPU)
    images: int = 1                         # images per prompt
    image_size: Optional[Tuple[int, int]] = None  # (height, width) where the family has dynamic resolution
    gpu_dtype: str = "bfloat16"             # dtype on GPU; CPU runs use float32
    model_key: str = ""                     # presets with the same key share one built model

    @property
    def key(self) -> str:
        return self.model_key or self.name


PRESETS: Dict[str, Preset] = {}


def register_preset(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


CLIP_L_336 = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
# A narrow CLIP with the same 24x24 patch grid: the CPU presets time the decoder, not a 300M-parameter tower.
CLIP_NARROW_336 = dict(CLIP_L_336, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                       num_attention_heads=4, projection_dim=256)
VICUNA_7B = dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=32001)
VICUNA_13B = dict(VICUNA_7B, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=40)
# The "mid" decoder: LLaVA-1.5's layout and head_dim 128, narrowed so a 2-core CPU prefill takes seconds.
MID_DECODER = dict(VICUNA_7B, hidden_size=1024, intermediate_size=2752, num_hidden_layers=16,
                   num_attention_heads=8, num_key_value_heads=8)
TINY_TEXT = dict(model_type="llama", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=12,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0)
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def llava(vision: dict, text: dict, image_token_id: int = 32000, vision_feature_layer: int = -2):
    return lambda: LlavaConfig(vision_config=dict(vision), text_config=dict(text), image_token_id=image_token_id,
                               vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
                               projector_hidden_act="gelu")


def llava_next(vision: dict, text: dict, pinpoints, image_token_id: int = 32000):
    return lambda: LlavaNextConfig(vision_config=dict(vision), text_config=dict(text), image_token_id=image_token_id,
                                   vision_feature_layer=-2, vision_feature_select_strategy="default",
                                   image_grid_pinpoints=pinpoints)


def qwen2_vl(hidden: int, ffn: int, layers: int, heads: int, kv: int, vocab: int, vision: dict,
             mrope=(16, 24, 24), tie: bool = False):
    ids = {} if vocab > 151645 else dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)  # tiny vocabularies
    text = dict(ids, vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
                rms_norm_eps=1e-6, tie_word_embeddings=tie,
                rope_parameters={"rope_type": "default", "mrope_section": list(mrope), "rope_theta": 1e6})
    special = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653) if vocab > 151655 else \
        dict(image_token_id=vocab - 10, video_token_id=vocab - 9, vision_start_token_id=vocab - 8,
             vision_end_token_id=vocab - 7)
    return lambda: Qwen2VLConfig(text_config=dict(text), vision_config=dict(vision), tie_word_embeddings=tie,
                                 **special, **ids)


QWEN_VIT = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3)

# Qwen2-7B / Qwen2.5-7B decoders (LLaVA-OneVision-7B, InternVL3-8B) and their "mid" CPU narrowing.
QWEN2_7B = dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                tie_word_embeddings=False)
QWEN2_MID = dict(QWEN2_7B, vocab_size=32064, hidden_size=1024, intermediate_size=2752, num_hidden_layers=16,
                 num_attention_heads=8, num_key_value_heads=8)
QWEN2_TINY = dict(QWEN2_7B, vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=12,
                  num_attention_heads=4, num_key_value_heads=2)
SIGLIP_SO400M = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                     num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False)
ONEVISION_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
INTERN_VIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=[448, 448], patch_size=[14, 14], use_qk_norm=False, norm_type="layer_norm",
                       use_mean_pooling=True, layer_scale_init_value=0.1)


def llava_onevision(vision: dict, text: dict, image_token_id: int = 151646):
    return lambda: LlavaOnevisionConfig(
        vision_config=dict(vision), text_config=dict(text), image_token_index=image_token_id,
        video_token_index=image_token_id + 1, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=[[p * vision["image_size"] // 384 for p in pp]
                                                                  for pp in ONEVISION_PINPOINTS],
        tie_word_embeddings=False)


def internvl(vision: dict, text: dict, image_token_id: int = 151667):
    side = vision["image_size"][0] // vision["patch_size"][0]
    return lambda: InternVLConfig(
        vision_config=dict(vision), text_config=dict(text), image_token_id=image_token_id,
        image_seq_length=(side // 2) ** 2, downsample_ratio=0.5, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False)


def qwen3_vl(hidden: int, ffn: int, layers: int, heads: int, kv: int, vocab: int, vision: dict, head_dim: int = 128,
             mrope=(24, 20, 20)):
    ids = {} if vocab > 151655 else dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    text = dict(ids, vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=32768,
                rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": list(mrope),
                                 "mrope_interleaved": True})
    special = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653) if vocab > 151655 else \
        dict(image_token_id=vocab - 10, video_token_id=vocab - 9, vision_start_token_id=vocab - 8,
             vision_end_token_id=vocab - 7)
    return lambda: Qwen3VLConfig(text_config=dict(text), vision_config=dict(vision, out_hidden_size=hidden),
                                 tie_word_embeddings=False, **special)


QWEN3_VIT = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, in_channels=3, patch_size=16,
                 spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                 deepstack_visual_indexes=[8, 16, 24])
QWEN3_VIT_NARROW = dict(QWEN3_VIT, depth=3, hidden_size=256, intermediate_size=1024, num_heads=4,
                        deepstack_visual_indexes=[0, 1, 2])

for p in (
    # GPU presets: the published models' dimensions.
    Preset("llava-1.5-7b", llava(CLIP_L_336, VICUNA_7B), "gpu"),
    Preset("llava-1.5-13b", llava(CLIP_L_336, VICUNA_13B), "gpu"),
    Preset("llava-next-7b", llava_next(CLIP_L_336, VICUNA_7B, LLAVA_NEXT_PINPOINTS), "gpu", image_size=(672, 672)),
    Preset("qwen2-vl-2b", qwen2_vl(1536, 8960, 28, 12, 2, 151936, dict(QWEN_VIT, hidden_size=1536), tie=True),
           "gpu", image_size=(448, 448)),
    Preset("qwen2-vl-7b", qwen2_vl(3584, 18944, 28, 28, 4, 152064, dict(QWEN_VIT, hidden_size=3584)),
           "gpu", image_size=(448, 448)),
    Preset("qwen3-vl-8b", qwen3_vl(4096, 12288, 36, 32, 8, 151936, QWEN3_VIT), "gpu", image_size=(448, 448)),
    Preset("llava-onevision-7b", llava_onevision(SIGLIP_SO400M, QWEN2_7B), "gpu", image_size=(384, 384)),
    Preset("internvl3-8b", internvl(INTERN_VIT_300M, dict(QWEN2_7B, vocab_size=151674)), "gpu",
           image_size=(448, 448)),
    # CPU presets: compute-bound prefill on 2 cores, fp32; 576 and 2,880 (5 x 576) image tokens.
    Preset("cpu-mid-576", llava(CLIP_NARROW_336, MID_DECODER), "cpu", images=1, model_key="cpu-mid"),
    Preset("cpu-mid-2880", llava(CLIP_NARROW_336, MID_DECODER), "cpu", images=5, model_key="cpu-mid"),
    # The newer families' CPU presets: the same mid decoder size, a narrow vision tower.
    Preset("cpu-mid-qwen2-vl", qwen2_vl(1024, 2752, 16, 8, 8, 32064,
                                        dict(QWEN_VIT, depth=2, embed_dim=256, num_heads=4, hidden_size=1024)),
           "cpu", image_size=(448, 448)),
    Preset("cpu-mid-qwen3-vl", qwen3_vl(1024, 2752, 16, 8, 8, 32064, QWEN3_VIT_NARROW), "cpu",
           image_size=(768, 768)),
    Preset("cpu-mid-onevision", llava_onevision(dict(SIGLIP_SO400M, hidden_size=256, intermediate_size=1024,
                                                     num_hidden_layers=2, num_attention_heads=4), QWEN2_MID,
                                                image_token_id=32000), "cpu", image_size=(384, 384)),
    Preset("cpu-mid-internvl", internvl(dict(INTERN_VIT_300M, hidden_size=256, intermediate_size=1024,
                                             num_hidden_layers=2, num_attention_heads=4), QWEN2_MID,
                                        image_token_id=32000), "cpu", image_size=(896, 896)),
    # Tiny presets: seconds in CI; 12 layers so K=2, R=0.9, 10% steps fits.
    Preset("tiny-llava", llava(dict(CLIP_NARROW_336, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, image_size=112, projection_dim=32),
                               TINY_TEXT, image_token_id=150, vision_feature_layer=-1), "tiny"),
    Preset("tiny-llava-next", llava_next(dict(CLIP_NARROW_336, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=2, image_size=56,
                                              projection_dim=32),
                                         TINY_TEXT, [[56, 112], [112, 56]], image_token_id=150),
           "tiny", image_size=(112, 56)),
    Preset("tiny-qwen2-vl", qwen2_vl(64, 128, 12, 4, 2, 160,
                                     dict(QWEN_VIT, depth=1, embed_dim=32, num_heads=2, hidden_size=64),
                                     mrope=(2, 3, 3)), "tiny", image_size=(112, 112)),
    Preset("tiny-qwen3-vl", qwen3_vl(64, 128, 12, 4, 2, 160, dict(QWEN3_VIT_NARROW, hidden_size=32,
                                                                   intermediate_size=64, num_heads=2,
                                                                   num_position_embeddings=64),
                                     head_dim=16, mrope=(4, 2, 2)), "tiny", image_size=(128, 128)),
    Preset("tiny-onevision", llava_onevision(dict(SIGLIP_SO400M, hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=1, num_attention_heads=2, image_size=32,
                                                  patch_size=8), QWEN2_TINY, image_token_id=150),
           "tiny", image_size=(64, 64)),
    Preset("tiny-internvl", internvl(dict(INTERN_VIT_300M, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=1, num_attention_heads=2, image_size=[64, 64],
                                          patch_size=[8, 8]), QWEN2_TINY, image_token_id=150),
           "tiny", image_size=(128, 128)),
):
    register_preset(p)


def resolve_dtype(name: Optional[str], preset: Optional[Preset], device: torch.device) -> torch.dtype:
    """Explicit ``--dtype``, else the preset's GPU dtype (bf16 for real weights) on CUDA, float32 elsewhere."""
    if name:
        return getattr(torch, name)
    if device.type == "cuda":
        return getattr(torch, preset.gpu_dtype if preset is not None else "bfloat16")
    return torch.float32


def build_random(preset: Preset, device: torch.device, dtype: torch.dtype, attn: str, seed: int = 0):
    """``preset``'s model with random weights, allocated and initialised on ``device`` in ``dtype``."""
    cfg = preset.config()
    cls = model_class(cfg.model_type)
    torch.manual_seed(seed)
    with torch.device(device):  # parameters are created on the device: no CPU copy of a 13B model
        model = cls._from_config(cfg, dtype=dtype, attn_implementation=attn)
    return _ready(model)


def load_pretrained(path: str, device: torch.device, dtype: torch.dtype, attn: str):
    """Real weights from a local folder or a hub id."""
    cfg = AutoConfig.from_pretrained(path)
    try:
        cls = model_class(cfg.model_type)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    model = cls.from_pretrained(path, dtype=dtype, device_map=str(device), attn_implementation=attn)
    return _ready(model)


def _ready(model):
    model.eval()
    gc = model.generation_config
    gc.do_sample = False
    if gc.pad_token_id is None:  # silences generate's pad warning; batches here are never padded
        gc.pad_token_id = 0
    return model
