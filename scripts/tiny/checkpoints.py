"""Tiny random-weight LLaVA-1.5 / Qwen2-VL / Qwen2.5-VL checkpoints for offline tests.

The newer families (Qwen3-VL, LLaVA-OneVision, InternVL) are in ``families.py``, built with the
public helpers here (vocabulary, tokenizers, the answer-then-EOS trick, saving with a stamp).

Every checkpoint is a normal Hugging Face directory (config, safetensors weights,
tokenizer, image/video processor, chat template, generation config) that loads with
``AutoProcessor.from_pretrained`` and ``*ForConditionalGeneration.from_pretrained``
without network access.  Weights are random except for two reserved residual channels
that make greedy decoding print ``answer_letter`` and then stop (see
:func:`install_answer_then_eos`), so evaluation runs are short and deterministic.

CLI::

    python scripts/tiny/checkpoints.py --family llava --out /tmp/tiny-llava
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch

STAMP_FILE = "tiny_checkpoint.json"
# Bump when the checkpoint layout or the weight trick changes, so stale stamps rebuild.
FORMAT_VERSION = 1
FAMILIES = ("llava", "qwen2vl", "qwen2_5vl")

# Value of the answer/stop flag in the residual stream and the lm_head gain reading it.
# The rest of the residual stream has norm O(1) at random init, so after the final
# RMSNorm the flag is worth ~sqrt(hidden)/2 and its logit ~40-80, against random logits
# below 1 (margin >= 40 over seeds 0/3, hidden 64/128, 2/24 layers).
_CTRL_VALUE = 1.0
_CTRL_GAIN = 10.0

_WORDS = """
A B C D E F a b c d e yes no true false not none
red green blue yellow orange purple pink brown black white gray grey
circle circles square squares triangle triangles shape shapes star rectangle
color colour colors colours object objects cell cells grid background
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
zero one two three four five six seven eight nine ten
answer answers with the option options letter question questions choice choices
given from directly single word phrase using please what which how many much is are
was were there here a an of in on at to for by this that these those it its and or
any some all each every does do did contain contains containing shown show shows count
number left right top bottom above below middle center centre next row column first
last image picture photo figure look describe select correct following based only
hint you your helpful assistant user system USER ASSISTANT SYSTEM
""".split()
_PUNCT = ["?", ".", ",", ":", ";", "!", "'", '"', "(", ")", "-", "/", "):", ").", "?\"", "'s"]


def vocabulary(specials: list[str]) -> dict[str, int]:
    """Specials first, then the word list (plus capitalised forms) and punctuation."""
    words = list(dict.fromkeys(specials + _WORDS + [w.capitalize() for w in _WORDS] + _PUNCT))
    return {w: i for i, w in enumerate(words)}


def word_level_tokenizer(vocab: dict[str, int], unk: str, specials: list[str]):
    """``tokenizers`` WordLevel model that splits on whitespace and punctuation."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    # Specials must be "added" tokens so "<image>" etc. split out of running text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


# LLaVA-1.5: "USER: <image>\n<question> ASSISTANT:" (images first, then text).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set items = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set items = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}"
    "{% for item in items if item['type'] == 'text' %}{{ item['text'] + ' ' }}{% endfor %}"
    "{% else %}"
    "{{ message['role'] | upper + ': ' }}"
    "{% for item in items if item['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for item in items if item['type'] == 'text' %}{{ item['text'] + ' ' }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# ChatML as used by Qwen2-VL, with the default system prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'video' or 'video' in item %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<unk>"]


def attention_heads(hidden_size: int) -> int:
    """Attention heads of a tiny decoder of width ``hidden_size``: head_dim 16."""
    if hidden_size % 16:
        raise ValueError(f"hidden_size must be a multiple of 16 (head_dim 16), got {hidden_size}")
    return hidden_size // 16


def tiny_llava_tokenizer():
    """Tokenizer for the tiny LLaVA (adds <s> in front, like llava-hf)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary(LLAVA_SPECIALS)
    tok = word_level_tokenizer(vocab, "<unk>", LLAVA_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side="left", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})


def tiny_qwen_tokenizer():
    """Tokenizer for the tiny Qwen2-VL family (no BOS, eos <|im_end|>, pad <|endoftext|>)."""
    from transformers import PreTrainedTokenizerFast

    tok = word_level_tokenizer(vocabulary(QWEN_SPECIALS), "<unk>", QWEN_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side="left", unk_token="<unk>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})


def tiny_llava_config(*, image_size=112, num_layers=12, hidden_size=64, tokenizer=None,
                      vision_hidden=32, vision_layers=2, vision_feature_layer=-2):
    """``LlavaConfig`` with a small CLIP tower (patch 14) and a tiny Llama.

    Defaults give the random-weight test tower (2 layers, hidden 32, features from the
    second-to-last layer, like llava-1.5); the trained tiny model widens it.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    tok = tokenizer or tiny_llava_tokenizer()
    ids = tok.convert_tokens_to_ids
    heads = attention_heads(hidden_size)
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers, num_attention_heads=max(2, vision_hidden // 32),
        image_size=image_size, patch_size=14, projection_dim=vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, bos_token_id=ids("<s>"), eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"), tie_word_embeddings=False)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=ids("<image>"),
        image_seq_length=(image_size // 14) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer, tie_word_embeddings=False)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (t, h, w) like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_qwen2vl_config(*, num_layers=12, hidden_size=64, qwen2_5=False, tokenizer=None):
    """``Qwen2VLConfig`` (or ``Qwen2_5_VLConfig``) with a 2-layer vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    tok = tokenizer or tiny_qwen_tokenizer()
    ids = tok.convert_tokens_to_ids
    heads = attention_heads(hidden_size)
    text = dict(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                         "mrope_section": mrope_section(hidden_size // heads)},
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=False, use_sliding_window=False)
    if qwen2_5:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=hidden_size, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1])
        cls = Qwen2_5_VLConfig
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=hidden_size, mlp_ratio=2, num_heads=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        cls = Qwen2VLConfig
    return cls(
        text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)


def install_answer_then_eos(model, answer_id: int, eos_id: int) -> None:
    """Make greedy decoding emit ``answer_id`` and then ``eos_id`` from any prompt.

    The last two hidden channels of the text model become control channels:
    every token embedding carries ``_CTRL_VALUE`` in channel -1 ("answer now") except
    the answer token, which carries it in channel -2 ("stop now").  No decoder layer
    reads them (zero RMSNorm gains) or writes them (zero o_proj/down_proj rows), so at
    the final norm they still hold exactly the current token's flag.  ``lm_head`` reads
    channel -1 only into the answer row and channel -2 only into the EOS row, with a
    large gain.  Everything else (vision tower, attention over image tokens, the other
    logits) stays random and image dependent; only the argmax is pinned.  A prompt that
    ends with the answer token itself would stop at once, which real prompts never do.
    """
    ctrl_answer, ctrl_stop = -1, -2
    lm = model.model.language_model
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, [ctrl_answer, ctrl_stop]] = 0.0
        emb[:, ctrl_answer] = _CTRL_VALUE
        emb[answer_id, ctrl_answer] = 0.0
        emb[answer_id, ctrl_stop] = _CTRL_VALUE
        for layer in lm.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[[ctrl_answer, ctrl_stop]] = 0.0
            for proj in (layer.self_attn.o_proj, layer.mlp.down_proj):
                proj.weight[[ctrl_answer, ctrl_stop], :] = 0.0
                if proj.bias is not None:
                    proj.bias[[ctrl_answer, ctrl_stop]] = 0.0
        lm.norm.weight[[ctrl_answer, ctrl_stop]] = 1.0
        head = model.get_output_embeddings().weight
        head[:, [ctrl_answer, ctrl_stop]] = 0.0
        head[answer_id, ctrl_answer] = _CTRL_GAIN
        head[eos_id, ctrl_stop] = _CTRL_GAIN


def save_checkpoint(model, processor, out_dir, *, answer_letter, eos_ids, pad_id, bos_id, stamp):
    """Apply the answer trick, set a short generation config and save everything."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    answer_id = tok.convert_tokens_to_ids(answer_letter)
    if answer_id == tok.unk_token_id:
        raise ValueError(f"answer_letter {answer_letter!r} is not in the tiny vocabulary")
    install_answer_then_eos(model, answer_id, eos_ids[0])
    model.generation_config = GenerationConfig(
        max_new_tokens=8, do_sample=False, eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=pad_id, bos_token_id=bos_id)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP_FILE).unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / STAMP_FILE).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return out


def tiny_llava_processor(tokenizer=None, image_size=112):
    """``LlavaProcessor`` (CLIP image processor, patch 14, LLaVA-1.5 chat template)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer or tiny_llava_tokenizer(),
        patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE)


def build_tiny_llava(out_dir, *, image_size=112, num_layers=12, hidden_size=64, seed=0,
                     answer_letter="A") -> pathlib.Path:
    """Write a llava-hf style tiny checkpoint to ``out_dir``; return its path.

    ``image_size`` must be a multiple of 14; it gives ``(image_size/14)**2`` image tokens
    (64 at 112 px).  Greedy generation answers ``answer_letter`` then ``</s>``.
    """
    from transformers import LlavaForConditionalGeneration

    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of 14, got {image_size}")
    tok = tiny_llava_tokenizer()
    config = tiny_llava_config(image_size=image_size, num_layers=num_layers,
                               hidden_size=hidden_size, tokenizer=tok)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    processor = tiny_llava_processor(tok, image_size)
    stamp = make_stamp("llava", image_size, num_layers, hidden_size, seed, answer_letter)
    ids = tok.convert_tokens_to_ids
    return save_checkpoint(model, processor, out_dir, answer_letter=answer_letter,
                   eos_ids=[ids("</s>")], pad_id=ids("<pad>"), bos_id=ids("<s>"), stamp=stamp)


def build_tiny_qwen2vl(out_dir, *, image_size=112, num_layers=12, hidden_size=64, seed=0,
                       answer_letter="A", qwen2_5=False) -> pathlib.Path:
    """Write a tiny Qwen2-VL (or Qwen2.5-VL) checkpoint to ``out_dir``; return its path.

    Processor: ``Qwen2VLProcessor`` (``Qwen2_5_VLProcessor`` for Qwen2.5-VL) whose image
    processor uses patch 14, merge 2, temporal patch 2, so a 112 px image becomes grid
    [1, 8, 8] and 16 ``<|image_pad|>`` tokens.  ``image_size`` is only
    recorded in the stamp (Qwen resizes dynamically).  Greedy generation answers
    ``answer_letter`` then ``<|im_end|>``.
    """
    from transformers import (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = tiny_qwen_tokenizer()
    config = tiny_qwen2vl_config(num_layers=num_layers, hidden_size=hidden_size,
                                 qwen2_5=qwen2_5, tokenizer=tok)
    torch.manual_seed(seed)
    cls = Qwen2_5_VLForConditionalGeneration if qwen2_5 else Qwen2VLForConditionalGeneration
    model = cls(config).to(torch.float32).eval()
    vision = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor_cls = Qwen2_5_VLProcessor if qwen2_5 else Qwen2VLProcessor
    processor = processor_cls(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision),
        tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
    family = "qwen2_5vl" if qwen2_5 else "qwen2vl"
    stamp = make_stamp(family, image_size, num_layers, hidden_size, seed, answer_letter)
    ids = tok.convert_tokens_to_ids
    return save_checkpoint(model, processor, out_dir, answer_letter=answer_letter,
                   eos_ids=[ids("<|im_end|>"), ids("<|endoftext|>")],
                   pad_id=ids("<|endoftext|>"), bos_id=ids("<|endoftext|>"), stamp=stamp)


def make_stamp(family, image_size, num_layers, hidden_size, seed, answer_letter) -> dict:
    """What a checkpoint directory's stamp records: a rebuild with the same arguments reuses it."""
    return dict(format=FORMAT_VERSION, family=family, image_size=image_size,
                num_layers=num_layers, hidden_size=hidden_size, seed=seed,
                answer_letter=answer_letter)


def build_tiny_checkpoint(family, out_dir, *, image_size=112, num_layers=12, hidden_size=64,
                          seed=0, answer_letter="A", reuse=True) -> pathlib.Path:
    """Build ``family`` ("llava", "qwen2vl", "qwen2_5vl") in ``out_dir``.

    With ``reuse``, a directory whose stamp records the same arguments is returned as is.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    out = pathlib.Path(out_dir)
    want = make_stamp(family, image_size, num_layers, hidden_size, seed, answer_letter)
    stamp_path = out / STAMP_FILE
    if reuse and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == want:
                return out
        except json.JSONDecodeError:
            pass
    kwargs = dict(image_size=image_size, num_layers=num_layers, hidden_size=hidden_size,
                  seed=seed, answer_letter=answer_letter)
    if family == "llava":
        return build_tiny_llava(out, **kwargs)
    return build_tiny_qwen2vl(out, qwen2_5=family == "qwen2_5vl", **kwargs)


def load_tiny(ckpt_dir, *, attn_implementation="sdpa"):
    """Load ``(processor, model)`` from a tiny checkpoint directory (of any family), offline."""
    from transformers import AutoConfig, AutoProcessor

    from SequentialPrune.adapters import model_class

    model_type = AutoConfig.from_pretrained(ckpt_dir).model_type
    processor = AutoProcessor.from_pretrained(ckpt_dir)
    model = model_class(model_type).from_pretrained(
        ckpt_dir, dtype=torch.float32, attn_implementation=attn_implementation).eval()
    return processor, model


def greedy_answer(processor, model, image, question="What is the answer?"):
    """Greedy-generate for one image and question; return ``(new_token_ids, text)``."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    return new, processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--out", required=True, help="checkpoint directory (reused if complete)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answer-letter", default="A")
    parser.add_argument("--rebuild", action="store_true", help="ignore an existing stamp")
    args = parser.parse_args(argv)
    path = build_tiny_checkpoint(
        args.family, args.out, image_size=args.image_size, num_layers=args.layers,
        hidden_size=args.hidden, seed=args.seed, answer_letter=args.answer_letter,
        reuse=not args.rebuild)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
