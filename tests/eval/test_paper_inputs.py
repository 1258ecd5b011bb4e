"""The paper protocol's inputs and decoding settings against the original research code.

Every reference here is re-derived in this file from the original (LeeBumSeok/Tokenpruning @ 0898f4a; the
file and line of each is named), never taken from our own output:

* images: ``expand2square`` + the PIL-based CLIP preprocessing of transformers 4.31 (``llava/mm_utils.py``);
* prompt: ``LLaVA.generate_inner`` and ``concat_tilist`` (``vlmeval/vlm/llava/llava.py``);
* token ids: ``tokenizer_image_token`` (``llava/mm_utils.py:43-68``), on a SentencePiece BPE model trained
  here, wrapped as the slow (SentencePiece) and the fast (``tokenizers``) Llama tokenizer;
* dataset prompt strings: the original's VLMEvalKit builders;
* Qwen2-VL settings: ``vlmeval/config.py:262`` and ``vlmeval/vlm/qwen2_vl/model.py``.
"""

import base64
import io
import re
import string

import numpy as np
import pandas as pd
import pytest
import torch
from eval_helpers import REPO
from PIL import Image

from scripts.tiny import checkpoints as tc
from SequentialPrune.frontends.vlmevalkit.flags import parse_flags

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LLAVA_15 = dict(size=336, patch=14)  # openai/clip-vit-large-patch14-336: 576 image tokens

# ----------------------------------------------------------------------------- the original, re-derived
# vlmeval/vlm/llava/llava.py:27-30 (the system prompt ends with a space)
ORIGINAL_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions. ")
ORIGINAL_IMAGE_TOKEN_INDEX = -200  # llava/constants.py:8


def original_prompt(message) -> str:
    """llava.py:119-127 (concat_tilist) and :174."""
    text = ""
    for item in message:
        if item["type"] == "text":
            text += item["value"]
        elif item["type"] == "image":
            text += " <image> "
    return ORIGINAL_SYSTEM + "USER: " + text + " ASSISTANT: "


def original_tokenizer_image_token(prompt, tokenizer, image_token_index=ORIGINAL_IMAGE_TOKEN_INDEX):
    """llava/mm_utils.py:43-68, as written there."""
    prompt_chunks = []
    for chunk in prompt.split("<image>"):
        if len(chunk) > 0:
            prompt_chunks.append(tokenizer(chunk).input_ids)
        else:
            prompt_chunks.append([tokenizer.bos_token_id])

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def expanded(ids, image_id, n):
    """The original's model replaced each -200 by the image's n embeddings (llava_arch.py:138-178)."""
    out = []
    for i in ids:
        out += [image_id] * n if i == ORIGINAL_IMAGE_TOKEN_INDEX else [i]
    return out


def expand2square(pil_img, background_color):
    """llava/mm_utils.py:14-25."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def reference_pixels(img, size=LLAVA_15["size"]):
    """process_images(image_aspect_ratio='pad') with 4.31's CLIPImageProcessor: pad with the mean colour, PIL
    bicubic resize (the square needs no crop), rescale by 1/255 and normalise in float32."""
    square = expand2square(img, tuple(int(x * 255) for x in CLIP_MEAN))
    a = np.asarray(square.resize((size, size), Image.BICUBIC), dtype=np.float32) * np.float32(1 / 255)
    a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def original_llava_mcq(line) -> str:
    """The original's LLaVA.build_prompt text (llava.py:93-114)."""
    question = line["question"]
    hint = line["hint"] if ("hint" in line and not pd.isna(line["hint"])) else None
    if hint is not None:
        question = hint + "\n" + question
    options = {c: line[c] for c in string.ascii_uppercase if c in line and not pd.isna(line[c])}
    for key, item in options.items():
        question += f"\n{key}. {item}"
    cn = re.search("[\u4e00-\u9fff]", question) is not None
    if options:
        return question + ("\n请直接回答选项字母。" if cn else
                           "\nAnswer with the option's letter from the given choices directly.")
    return question + ("\n请直接回答问题。" if cn else "\nAnswer the question directly.")


# ----------------------------------------------------------------------------- fixtures
CORPUS = [ORIGINAL_SYSTEM, "USER: What is the title of this document? ASSISTANT: ",
          "Answer the question using a single word or phrase.", "Is there a red circle in the image? yes no",
          "Answer with the option's letter from the given choices directly.",
          "Hint: look at the top row\nWhich shape is it?\nA. circle\nB. square\nC. triangle\nD. star 12 345"]


@pytest.fixture(scope="module")
def sp_tokenizers(tmp_path_factory):
    """A SentencePiece BPE model trained here (Llama-style: byte fallback, dummy prefix, extra spaces kept),
    as the slow and the fast Llama tokenizer, each with <image> as an added token like llava-hf's."""
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    d = tmp_path_factory.mktemp("sp")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=model, vocab_size=420, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        allow_whitespace_only_pieces=True, character_coverage=1.0, minloglevel=2)
    (d / "tokenizer.model").write_bytes(model.getvalue())
    # transformers 5's only "slow" tokenizer runs SentencePiece itself, as 4.31's LlamaTokenizer(use_fast=False) did
    slow = SentencePieceBackend(vocab_file=str(d / "tokenizer.model"), bos_token="<s>", eos_token="</s>",
                                unk_token="<unk>", special_tokens_pattern="bos")
    fast = LlamaTokenizerFast.from_pretrained(str(d), add_bos_token=True)
    for tok in (slow, fast):
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert slow.convert_tokens_to_ids("<image>") == fast.convert_tokens_to_ids("<image>") == 420
    return d, {"slow": slow, "fast": fast}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = {}
    for name, (w, h) in {"portrait": (300, 500), "landscape": (500, 301), "wide4to1": (480, 120),
                         "odd_portrait": (301, 500)}.items():
        y, x = np.mgrid[0:h, 0:w]
        a = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        out[name] = d / f"{name}.jpg"
        Image.fromarray(a).save(out[name])  # the original dumped every image as {index}.jpg
    return out


def llava15_image_processor():
    """The llava-hf LLaVA-1.5 image processor (CLIP ViT-L/14-336; transformers 5 loads the torchvision one)."""
    from transformers import CLIPImageProcessor

    s = LLAVA_15["size"]
    return CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}, resample=3,
                              image_mean=CLIP_MEAN, image_std=CLIP_STD)


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("name", ["portrait", "landscape", "wide4to1", "odd_portrait"])
def test_images_are_padded_with_the_mean_colour_then_resized(images, name):
    from SequentialPrune.evaluation.protocols.paper_llava import padding_image_processor

    img = Image.open(images[name]).convert("RGB")
    ours = padding_image_processor(llava15_image_processor())(images=img, return_tensors="pt")["pixel_values"][0]
    ref = reference_pixels(img)
    # One 8-bit level is 1/255/std > 0.014 after normalisation: 1e-5 means the same pixels (float rounding only).
    assert ours.shape == ref.shape == (3, 336, 336)
    assert (ours - ref).abs().max() < 1e-5
    # The hf protocol's processor crops the long side instead: far from the original's input.
    cropped = llava15_image_processor()(images=img, return_tensors="pt")["pixel_values"][0]
    assert (cropped - ref).abs().max() > 0.5


# ----------------------------------------------------------------------------- prompt and ids
def _llava_prompt_builder(paths):
    from vlmeval.vlm.llava.llava import LLaVA_Next

    class Builder(LLaVA_Next):  # VLMEvalKit's LLaVA prompt methods, without loading a model
        def __init__(self):
            pass

        def dump_image(self, line, dataset=None):
            return list(paths)
    return Builder()


def _dataset_builder(cls, name, paths):
    class Builder(cls):  # the dataset's own build_prompt, without its TSV
        def __init__(self):
            self.meta_only, self.dataset_name = False, name

        def dump_image(self, line):
            return list(paths)
    return Builder()


def vlmeval_messages(paths):
    """(kind, message) built by VLMEvalKit's builders the way the original's LLaVA got them: MCQ through LLaVA's own
    build_prompt (llava.py:82-86: custom prompt for MCQ only), Y/N and VQA through the datasets'."""
    from vlmeval.dataset import ImageVQADataset, ImageYORNDataset

    mcq = pd.Series(dict(index=0, question="Which shape is in the top row?", hint="Look at the grid.",
                         A="circle", B="square", C="triangle", D=float("nan")))
    line = pd.Series(dict(index=1, question="What is the title of this document?"))
    yn = pd.Series(dict(index=2, question="Is there a red circle in the image?"))
    return [("MCQ", _llava_prompt_builder(paths).build_prompt(mcq, "MMBench_DEV_EN")),
            ("Y/N", _dataset_builder(ImageYORNDataset, "POPE", paths).build_prompt(yn)),
            ("VQA", _dataset_builder(ImageVQADataset, "DocVQA_VAL", paths).build_prompt(line))]


def test_prompt_string_is_the_originals():
    from SequentialPrune.evaluation.protocols.paper_llava import SYSTEM_PROMPT, prompt_and_images

    assert SYSTEM_PROMPT == ORIGINAL_SYSTEM
    for n_images in (1, 2):
        paths = [f"/img{i}.jpg" for i in range(n_images)]
        for kind, message in vlmeval_messages(paths):
            prompt, got_paths = prompt_and_images(message)
            assert prompt == original_prompt(message), kind
            assert got_paths == paths
    # Interleaved items keep their order; text items join with nothing.
    message = [dict(type="text", value="Compare"), dict(type="image", value="/a.jpg"),
               dict(type="text", value="and"), dict(type="image", value="/b.jpg"), dict(type="text", value="?")]
    assert prompt_and_images(message)[0] == original_prompt(message)
    # The reading of the original: two spaces before <image>, one after, a trailing space.
    one = [dict(type="image", value="/a.jpg"), dict(type="text", value="What is it?")]
    assert prompt_and_images(one)[0] == ORIGINAL_SYSTEM + "USER:  <image> What is it? ASSISTANT: "


@pytest.mark.parametrize("kind", ["slow", "fast"])
def test_token_ids_are_tokenizer_image_token_per_chunk(sp_tokenizers, kind):
    from SequentialPrune.evaluation.protocols.paper_llava import chunk_token_ids, prompt_and_images

    _, toks = sp_tokenizers
    tok = toks[kind]
    image_id, n = tok.convert_tokens_to_ids("<image>"), 576
    for n_images in (1, 2):
        for name, message in vlmeval_messages([f"/img{i}.jpg" for i in range(n_images)]):
            prompt, _ = prompt_and_images(message)
            ours = chunk_token_ids(prompt, lambda t: tok(t).input_ids, tok.bos_token_id, image_id, [n] * n_images)
            ref = expanded(original_tokenizer_image_token(original_prompt(message), tok), image_id, n)
            assert ours == ref, (kind, name, n_images)
            assert ours[0] == tok.bos_token_id and ours.count(tok.bos_token_id) == 1
            assert ours.count(image_id) == n * n_images
    # An empty chunk (back-to-back tags) is [bos] in the original, then sliced away.
    prompt = ORIGINAL_SYSTEM + "USER: <image><image>x ASSISTANT: "
    ours = chunk_token_ids(prompt, lambda t: tok(t).input_ids, tok.bos_token_id, image_id, [3, 3])
    assert ours == expanded(original_tokenizer_image_token(prompt, tok), image_id, 3)


def test_sentencepiece_encoder_is_the_slow_tokenizer(sp_tokenizers):
    """Our chunk encoder (the checkpoint's tokenizer.model) gives the slow tokenizer's ids; the fast tokenizer of
    transformers 5 does not after <image>, where the chunk starts with a space (why we load the slow one)."""
    from SequentialPrune.evaluation.protocols.paper_llava import (
        prompt_and_images,
        sentencepiece_encoder,
        sentencepiece_file,
    )

    d, toks = sp_tokenizers
    slow, fast = toks["slow"], toks["fast"]
    encode = sentencepiece_encoder(sentencepiece_file(str(d)), fast)  # the checkpoint's tokenizer is the fast one
    for _, message in vlmeval_messages(["/a.jpg", "/b.jpg"]):
        for chunk in prompt_and_images(message)[0].split("<image>"):
            if chunk:
                assert encode(chunk) == slow(chunk).input_ids, repr(chunk)
    after_image = " What is the title of this document? ASSISTANT: "
    assert fast(after_image).input_ids != slow(after_image).input_ids


def test_paper_inputs_end_to_end(sp_tokenizers, images):
    """PaperInputs on a llava-hf style processor with a SentencePiece checkpoint: ids and pixels as the original."""
    from SequentialPrune.evaluation.protocols.paper_llava import PaperInputs

    d, toks = sp_tokenizers
    processor = tc.tiny_llava_processor(tokenizer=toks["fast"], image_size=LLAVA_15["size"])
    processor.image_processor = llava15_image_processor()
    paper = PaperInputs.load(processor, str(d), "sentencepiece")
    paths = [str(images["portrait"]), str(images["wide4to1"])]
    for _, message in vlmeval_messages(paths):
        got = paper(message)
        ref_ids = expanded(original_tokenizer_image_token(original_prompt(message), toks["slow"]), paper.image_id, 576)
        assert got["input_ids"].tolist() == [ref_ids]
        assert got["attention_mask"].shape == got["input_ids"].shape
        ref_px = torch.stack([reference_pixels(Image.open(p).convert("RGB")) for p in paths])
        assert (got["pixel_values"] - ref_px).abs().max() < 1e-5
    assert paper.stop_ids() == [toks["fast"].eos_token_id]  # </s>
    with pytest.raises(ValueError, match="no tokenizer.model"):
        PaperInputs.load(processor, str(d.parent), "sentencepiece")


def test_prompt_builders_are_the_originals():
    """The dataset suffixes, LLaVA's MCQ prompt and Qwen2-VL's prompts are the original's strings."""
    from vlmeval.dataset import DATASET_TYPE, ImageBaseDataset, ImageVQADataset, ImageYORNDataset, OCRBench
    from vlmeval.vlm.llava.llava import LLaVA
    from vlmeval.vlm.qwen2_vl.prompt import Qwen2VLPromptMixin

    from SequentialPrune.frontends.vlmevalkit.models import LlavaSeqPrune

    builder = _llava_prompt_builder(["/a.jpg"])
    lines = [dict(question="Which?", hint="Look.", A="x", B="y"), dict(question="Which?", A="x", B=float("nan")),
             dict(question="哪一个?", A="x", B="y"), dict(question="How many?", hint=float("nan"))]
    for line in map(pd.Series, lines):
        msg = builder.build_prompt(line, "MMBench_DEV_EN")
        assert msg == [dict(type="image", value="/a.jpg"), dict(type="text", value=original_llava_mcq(line))]
        # VLMEvalKit's LLaVA (the original's class) builds the same
        assert LLaVA.build_prompt(builder, line, "MMBench_DEV_EN") == msg
    # LLaVA customises MCQ only (llava.py:82-86); our class inherits these methods.
    assert builder.use_custom_prompt("MMBench_DEV_EN") and not builder.use_custom_prompt("DocVQA_VAL")
    assert LlavaSeqPrune.use_custom_prompt is type(builder).use_custom_prompt
    # image_vqa.py:36-40 (DocVQA): the suffix; OCRBench and Y/N (MME, POPE): the raw question.
    vqa = _dataset_builder(ImageVQADataset, "DocVQA_VAL", ["/a.jpg"]).build_prompt(pd.Series(dict(question="Q?")))
    assert vqa[-1]["value"] == "Q?\nAnswer the question using a single word or phrase."
    assert "DocVQA_VAL" in ImageVQADataset.DATASET_URL and DATASET_TYPE("OCRBench") == "VQA"
    assert OCRBench.build_prompt is ImageBaseDataset.build_prompt
    yn = _dataset_builder(ImageYORNDataset, "MME", ["/a.jpg"]).build_prompt(pd.Series(dict(question="Q?")))
    assert yn[-1]["value"] == "Q?"

    class Qwen(Qwen2VLPromptMixin):  # the original's qwen2_vl/prompt.py strings
        def dump_image(self, line, dataset):
            return ["/a.jpg"]
    q = Qwen(use_custom_prompt=True)
    for ds in ("DocVQA_VAL", "OCRBench"):
        assert q.use_custom_prompt(ds)
        assert q.build_prompt(pd.Series(dict(question="Q?")), ds)[-1]["value"] == (
            "Q?\nPlease try to answer the question with short words or phrases if possible.")
    assert q.build_prompt(pd.Series(dict(question="Q?")), "POPE")[-1]["value"] == "Q? Please answer yes or no."
    assert not q.use_custom_prompt("MME")
    mcq = q.build_prompt(pd.Series(dict(question="Q?", hint="H.", A="x", B="y")), "MMBench_DEV_EN")[-1]["value"]
    assert mcq == ("Hint: H.\nQuestion: Q?\nOptions:\nA. x\nB. y\n"
                   "Please select the correct answer from the options above.")


# ----------------------------------------------------------------------------- resolution of the protocol flags
def _setting(*flags):
    return parse_flags([*flags, "--model", "x"])[0]


def test_protocol_defaults_resolve_per_model_and_device(tmp_path):
    from SequentialPrune.evaluation.protocols import resolve

    s = _setting()
    # The original's decoding arguments (llava.py:77; qwen2_vl/model.py:40-62) and its image files.
    greedy = dict(do_sample=False, num_beams=1)
    qwen_original = dict(num_beams=1, top_p=0.001, top_k=1, temperature=0.01, repetition_penalty=1.0)
    paper_files, hf_files = dict(image_files="original-jpeg"), dict(image_files="harness-rgb")
    llava = dict(protocol="paper", attn_impl="eager", max_new_tokens=100, generation=greedy, **paper_files)
    assert resolve("llava", True, "llava_seqprune", s, "x", device="cuda") == dict(llava, dtype="float16")
    assert resolve("llava", True, "llava_seqprune", s, "x", device="cpu") == dict(llava, dtype="float32")
    assert resolve("llava", True, "llava_seqprune", _setting("--protocol", "hf"), "x", device="cuda") == dict(
        protocol="hf", attn_impl="sdpa", max_new_tokens=2048, dtype="bfloat16", generation=greedy, **hf_files)
    over = _setting("--dtype", "bfloat16", "--attn-impl", "sdpa", "--max-new-tokens", "7")
    assert resolve("llava", True, "llava_seqprune", over, "x", device="cpu") == dict(
        llava, attn_impl="sdpa", max_new_tokens=7, dtype="bfloat16")
    # Qwen2-VL: the original's pixel bounds, 50 tokens, the checkpoint's dtype on GPU (torch_dtype='auto')
    cfg = tc.tiny_qwen2vl_config()
    cfg.dtype = "bfloat16"
    cfg.save_pretrained(tmp_path)
    q = resolve("qwen", True, "qwen2vl_seqprune", s, str(tmp_path), device="cuda")
    assert q == dict(protocol="paper", attn_impl="eager", max_new_tokens=50, dtype="bfloat16",
                     min_pixels=256 * 28 * 28, max_pixels=2048 * 28 * 28, ocrbench_min_pixels=10 * 10 * 28 * 28,
                     use_custom_prompt=True, generation=qwen_original, **paper_files)
    assert resolve("qwen", True, "qwen2vl_seqprune", _setting("--dtype", "auto"), str(tmp_path),
                   device="cpu")["dtype"] == "bfloat16"
    twin = dict(min_pixels=1280 * 28 * 28, max_pixels=16384 * 28 * 28, use_custom_prompt=False)
    hf = resolve("qwen", False, "qwen2_5vl_seqprune", s, "x", twin, device="cuda")
    assert hf == dict(protocol="hf", attn_impl="sdpa", max_new_tokens=2048, dtype="bfloat16", **twin,
                      ocrbench_min_pixels=78400, generation=greedy, **hf_files)
    explicit = resolve("qwen", True, "qwen2vl_seqprune", _setting("--min-pixels", "3136"), "x", device="cpu")
    assert explicit["min_pixels"] == explicit["ocrbench_min_pixels"] == 3136  # an explicit value wins on OCRBench
    with pytest.raises(ValueError, match="the paper did not evaluate qwen2_5vl_seqprune"):
        resolve("qwen", False, "qwen2_5vl_seqprune", _setting("--protocol", "paper"), "x", twin)
    with pytest.raises(ValueError, match="give both --min-pixels and --max-pixels"):
        resolve("qwen", True, "qwen2vl_seqprune", _setting("--max-pixels", "100000"), "x", device="cpu")


@pytest.mark.parametrize("flags,message", [
    (["--protocol", "original"], "invalid choice"),
    (["--dtype", "half"], "invalid choice"),
])
def test_bad_protocol_flags_are_refused(capsys, flags, message):
    with pytest.raises(SystemExit):
        parse_flags(flags + ["--model", "llava_seqprune"])
    assert message in capsys.readouterr().err


def test_qwen_image_tokens_under_the_paper_bounds(tmp_path, tiny_qwen):
    """A 1700x2200 page and a 240x60 crop get the original's visual token counts (1989, 256; OCRBench's
    crop 100), not VLMEvalKit's (4819, 1296)."""
    from qwen_vl_utils import process_vision_info

    from SequentialPrune.frontends.vlmevalkit.models import QwenVLSeqPrune, resolve

    ckpt = tiny_qwen
    paths = {}
    for w, h in ((1700, 2200), (240, 60)):
        paths[w, h] = tmp_path / f"{w}x{h}.jpg"
        Image.new("RGB", (w, h), (200, 100, 50)).save(paths[w, h])

    def tokens(model, size, dataset):
        content = model._prepare_content([dict(type="image", value=str(paths[size]))], dataset=dataset)
        img = process_vision_info([[{"role": "user", "content": content}]])[0][0]
        return img.size[0] * img.size[1] // (28 * 28)

    counts = {}
    for flags in ([], ["--protocol", "hf"]):
        s = parse_flags([*flags, "--model-path", str(ckpt), "--prune-method", "none"])[0]
        model = QwenVLSeqPrune(resolve("qwen2vl_seqprune", s, str(tmp_path / "run")))
        counts[model.protocol] = [tokens(model, (1700, 2200), "DocVQA_VAL"), tokens(model, (240, 60), "DocVQA_VAL"),
                                  tokens(model, (240, 60), "OCRBench")]
    assert counts == {"paper": [1989, 256, 100], "hf": [4819, 1296, 100]}


# ----------------------------------------------------------------------------- the tiny trained checkpoint
SHAPES_CKPT = REPO / "checkpoints" / "tiny-shapes-llava"


def test_tiny_checkpoint_sees_the_same_inputs_under_both_protocols(tmp_path):
    """demo_tiny.sh runs the paper protocol on a checkpoint trained on the chat template and crop: on its word-level
    tokenizer and square images both give the same ids and (to float rounding) the same pixels."""
    from scripts.tiny.lmudata import write_shapes_benchmarks
    from SequentialPrune.frontends.vlmevalkit.models import LlavaSeqPrune, resolve

    tsv = write_shapes_benchmarks(tmp_path / "LMUData", n=8)
    models = {}
    for protocol in ("paper", "hf"):
        s = parse_flags(["--model-path", str(SHAPES_CKPT), "--prune-method", "none", "--protocol", protocol])[0]
        models[protocol] = LlavaSeqPrune(resolve("llava_seqprune", s, str(tmp_path / protocol)))
    assert models["paper"].paper.tokenizer_kind == "checkpoint"  # no tokenizer.model: its own tokenizer
    checked = 0
    for name, path in tsv.items():
        kind = "MCQ" if name.endswith("_MCQ") else "VQA"
        for _, row in pd.read_csv(path, sep="\t").iterrows():
            img = tmp_path / f"{name}_{row['index']}.jpg"
            Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB").save(img)
            if kind == "MCQ":
                message = _llava_prompt_builder([str(img)]).build_prompt(row, "MMBench_DEV_EN")
            else:
                from vlmeval.dataset import ImageVQADataset
                message = _dataset_builder(ImageVQADataset, "GQA", [str(img)]).build_prompt(row)
            paper, hf = (models[p].model_inputs(message) for p in ("paper", "hf"))
            assert paper["input_ids"].tolist() == hf["input_ids"].tolist()
            assert (paper["pixel_values"] - hf["pixel_values"]).abs().max() < 1e-6
            checked += 1
    assert checked == 16


