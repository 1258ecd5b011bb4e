"""Tiny random-weight checkpoints of the newer families: Qwen3-VL, LLaVA-OneVision and InternVL (-hf).

Like ``checkpoints.py`` (whose tokenizer, answer-then-EOS trick and saving
they share), each is a normal Hugging Face directory that loads offline with
``AutoProcessor`` and the family's ``*ForConditionalGeneration``:

| family | vision | image tokens of a 112 px image |
|---|---|---|
| ``qwen3vl`` | patch 16, merge 2, DeepStack after decoder layers 0-2 | 16 at 128 px (``min/max_pixels`` 128*128) |
| ``llava_onevision`` | SigLIP 32 px / patch 8, anyres tiles of 32 px with newline tokens | 88 (base 16, 2x2 tiles 64, 8 newlines) |
| ``internvl`` | 64 px tiles / patch 8, pixel shuffle 0.5 | 80 (2x2 tiles and a thumbnail, 16 each) |
"""
from __future__ import annotations

import pathlib
from functools import partial

import torch

from scripts.tiny.checkpoints import QWEN_SPECIALS, attention_heads, build_tiny_llava, build_tiny_qwen2vl, \
    make_stamp, mrope_section, save_checkpoint, vocabulary, word_level_tokenizer

# ChatML with the image/video items each family's processor expands.
def _chatml(image: str, video: str, default_system: str = "") -> str:
    system = ("{% if loop.first and message['role'] != 'system' %}"
              "{{ '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' }}{% endif %}") if default_system else ""
    return (
        "{% for message in messages %}" + system +
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}{{ '" + image + "' }}"
        "{% elif item['type'] == 'video' or 'video' in item %}{{ '" + video + "' }}"
        "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


QWEN3_CHAT_TEMPLATE = _chatml("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>")
ONEVISION_CHAT_TEMPLATE = _chatml("<image>\\n", "<video>\\n", "You are a helpful assistant.")
INTERNVL_CHAT_TEMPLATE = _chatml("<IMG_CONTEXT>\\n", "<video>\\n")
_ONEVISION_SPECIALS = QWEN_SPECIALS + ["<image>", "<video>"]
_INTERNVL_SPECIALS = QWEN_SPECIALS + ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]


def _tokenizer(specials, **extra):
    from transformers import PreTrainedTokenizerFast

    tok = word_level_tokenizer(vocabulary(specials), "<unk>", specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", unk_token="<unk>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=extra)


def _text(tok, num_layers: int, hidden_size: int, **extra) -> dict:
    ids = tok.convert_tokens_to_ids
    heads = attention_heads(hidden_size)
    return dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                max_position_embeddings=32768, bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=False, **extra)


def _save(model, processor, tok, out_dir, family, image_size, num_layers, hidden_size, seed, answer_letter):
    ids = tok.convert_tokens_to_ids
    stamp = make_stamp(family, image_size, num_layers, hidden_size, seed, answer_letter)
    return save_checkpoint(model, processor, out_dir, answer_letter=answer_letter,
                   eos_ids=[ids("<|im_end|>"), ids("<|endoftext|>")], pad_id=ids("<|endoftext|>"),
                   bos_id=ids("<|endoftext|>"), stamp=stamp)


def build_tiny_qwen3vl(out_dir, *, image_size=112, num_layers=12, hidden_size=64, seed=0,
                       answer_letter="A") -> pathlib.Path:
    """Tiny Qwen3-VL: patch 16, merge 2 (a 128 px image is 16 tokens), DeepStack features from the three
    vision layers added after decoder layers 0, 1 and 2, interleaved M-RoPE."""
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    tok = _tokenizer(QWEN_SPECIALS, image_token="<|image_pad|>", video_token="<|video_pad|>",
                     vision_bos_token="<|vision_start|>", vision_eos_token="<|vision_end|>")
    heads = attention_heads(hidden_size)
    text = _text(tok, num_layers, hidden_size, head_dim=hidden_size // heads,
                 rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                  "mrope_section": mrope_section(hidden_size // heads)})
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden_size,
                  num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2])
    ids = tok.convert_tokens_to_ids
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                           video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                           vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    v = dict(patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**v), video_processor=Qwen3VLVideoProcessor(**v),
                                 tokenizer=tok, chat_template=QWEN3_CHAT_TEMPLATE)
    return _save(model, processor, tok, out_dir, "qwen3vl", image_size, num_layers, hidden_size, seed, answer_letter)


def build_tiny_llava_onevision(out_dir, *, image_size=112, num_layers=12, hidden_size=64, seed=0,
                               answer_letter="A") -> pathlib.Path:
    """Tiny LLaVA-OneVision: a SigLIP tower of 32 px / patch 8 (16 features per tile), anyres tiles of
    32 px up to 2x2 with a newline token after each row, a Qwen2 decoder."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tok = _tokenizer(_ONEVISION_SPECIALS, image_token="<image>", video_token="<video>")
    ids = tok.convert_tokens_to_ids
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(
        text_config=dict(_text(tok, num_layers, hidden_size), model_type="qwen2"),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                           vision_use_head=False),
        image_token_index=ids("<image>"), video_token_index=ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).to(torch.float32).eval()
    size = {"height": 32, "width": 32}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=ONEVISION_CHAT_TEMPLATE)
    return _save(model, processor, tok, out_dir, "llava_onevision", image_size, num_layers, hidden_size, seed,
                 answer_letter)


def build_tiny_internvl(out_dir, *, image_size=112, num_layers=12, hidden_size=64, seed=0,
                        answer_letter="A") -> pathlib.Path:
    """Tiny InternVL (-hf): 64 px tiles, patch 8, pixel shuffle 0.5 (16 ``<IMG_CONTEXT>`` per tile between
    ``<img>`` and ``</img>``), a Qwen2 decoder."""
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    tok = _tokenizer(_INTERNVL_SPECIALS, start_image_token="<img>", end_image_token="</img>",
                     context_image_token="<IMG_CONTEXT>", video_token="<video>")
    ids = tok.convert_tokens_to_ids
    config = InternVLConfig(
        text_config=dict(_text(tok, num_layers, hidden_size), model_type="qwen2"),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=[64, 64], patch_size=[8, 8], use_qk_norm=False, norm_type="layer_norm",
                           use_mean_pooling=True),
        image_token_id=ids("<IMG_CONTEXT>"), image_seq_length=16, downsample_ratio=0.5, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).to(torch.float32).eval()
    size = {"height": 64, "width": 64}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, max_patches=4),
        video_processor=InternVLVideoProcessor(size=size), tokenizer=tok, image_seq_length=16,
        chat_template=INTERNVL_CHAT_TEMPLATE)
    return _save(model, processor, tok, out_dir, "internvl", image_size, num_layers, hidden_size, seed, answer_letter)


BUILDERS = {"qwen3vl": build_tiny_qwen3vl, "llava_onevision": build_tiny_llava_onevision,
            "internvl": build_tiny_internvl}

# Every tiny checkpoint builder, by the transformers model_type of the checkpoint it writes (the stamps' family
# names above and checkpoints.FAMILIES predate these and stay as they are: existing stamps record them).
BY_MODEL_TYPE = {"llava": build_tiny_llava, "qwen2_vl": partial(build_tiny_qwen2vl, qwen2_5=False),
                 "qwen2_5_vl": partial(build_tiny_qwen2vl, qwen2_5=True), "qwen3_vl": build_tiny_qwen3vl,
                 "llava_onevision": build_tiny_llava_onevision, "internvl": build_tiny_internvl}
