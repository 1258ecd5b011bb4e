"""MileBench prompts, ids and images against a re-derivation of the original's rules, on a tokenizer trained here.

The references below are written in this file from the original (LeeBumSeok/Tokenpruning @ 0898f4a):
``SequentialPrune/eval/MileBench_main/utils.py`` (``MileBenchDataset.__getitem__``, ``ANLS_DocVQA_Dataset``,
``ROUGE_OCR_VQA_Dataset``), ``workers/model_workers.py`` (the LLaVA worker: CLEVR-Change fix, templates),
LLaVA's ``llava/conversation.py`` (``llava_llama_2``, ``llava_v1``, ``get_prompt``) and ``llava/mm_utils.py``
(``tokenizer_image_token``); never from our modules' output.
"""
import io
import json
import os

import numpy as np
import pytest
from eval_helpers import REPO
from PIL import Image

from scripts.tiny import checkpoints as tc

ORIGINAL_IMAGE_TOKEN_INDEX = -200
PATCH = 14
IMAGE_SIZE = 112  # tiny processor: (112 // 14) ** 2 = 64 image tokens per image


# ----------------------------------------------------------------------------- the original, re-derived
def ref_getitem(ann, task_instructions, img_dir, max_context_len, n_tokens_per_image, tokenizer, dataset_name,
                combine_image=None):
    """utils.py MileBenchDataset.__getitem__, step by step as there."""
    task_instruction = task_instructions[ann["task_instruction_id"]]
    context = ann["task_instance"]["context"]
    if "choice_list" in ann["task_instance"].keys():
        choice_str = "\nChoice list: \n"
        choice_str += "\n".join([(f"{chr(65 + idx)}. " if "GPR1200" != dataset_name else "") + f"{item}"
                                 for idx, item in enumerate(ann["task_instance"]["choice_list"])])
        choice_str += "\nYour answer is: "
        context += choice_str
    img_num = len(ann["task_instance"]["images_path"])
    for i in range(img_num):
        new = f"<Image {i + 1}> " if combine_image else "<ImageHere>"
        context = context.replace("{image#%d}" % (i + 1), new).replace("{table#%d}" % (i + 1), new)
    raw_img_list = []
    if combine_image:
        key = f"combined_{combine_image}_images"
        for p in ann["task_instance"][key]:
            raw_img_list.append(os.path.join(img_dir.replace(os.path.basename(img_dir), key), p))
    else:
        for p in ann["task_instance"]["images_path"]:
            raw_img_list.append(os.path.join(img_dir, p))
    ph = "<ImageHere>"
    tokenized_instruction = tokenizer(task_instruction, add_special_tokens=False).input_ids
    length_for_context = max_context_len - len(tokenized_instruction)
    context = context.split(ph)[::-1]
    past_total_len, context_id_chunks, ret_img_list, image_start = 0, [], [], False
    for fragment in context:
        cur_ids = tokenizer(fragment, add_special_tokens=False).input_ids
        if len(cur_ids) + past_total_len > length_for_context:
            if len(context_id_chunks) == 0:
                context_id_chunks.insert(0, cur_ids[-length_for_context:])
            break
        image_start = False
        context_id_chunks.insert(0, cur_ids)
        past_total_len += len(cur_ids)
        if not combine_image:
            if n_tokens_per_image + past_total_len > length_for_context:
                break
            if len(raw_img_list) > 0:
                image_start = True
                ret_img_list.insert(0, raw_img_list.pop(-1))
                past_total_len += n_tokens_per_image
    ret = ""
    for chunk in context_id_chunks[:-1]:
        ret += tokenizer.decode(chunk) + ph
    ret += tokenizer.decode(context_id_chunks[-1])
    if combine_image:
        assert len(raw_img_list) == 1
        ret_img_list.insert(0, raw_img_list.pop(-1))
        ret = ph + "\n" + task_instruction + "\n" + ret
    else:
        if image_start:
            ret = ph + ret
        ret = task_instruction + "\n" + ret
    return {"sample_id": ann["sample_id"], "context": ret, "raw_img_list": ret_img_list,
            "response": str(ann["response"])}


LLAMA_2_SYS = ("You are a helpful language and vision assistant. You are able to understand the visual content "
               "that the user provides, and assist the user with a variety of tasks using natural language.")
V1_SYS = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")


def ref_conversation(style, message):
    """conversation.py get_prompt for [[USER, message], [ASSISTANT, None]]."""
    messages = [["USER", message], ["ASSISTANT", None]]
    if style == "llava_llama_2":  # SeparatorStyle.LLAMA_2, sep <s>, sep2 </s>
        ret = ""
        for i, (role, msg) in enumerate(messages):
            if msg:
                if i == 0:
                    msg = f"<<SYS>>\n{LLAMA_2_SYS}\n<</SYS>>\n\n" + msg
                if i % 2 == 0:
                    ret += "<s>" + f"[INST] {msg} [/INST]"
                else:
                    ret += " " + msg + " " + "</s>"
        return ret.lstrip("<s>")
    seps = [" ", "</s>"]  # SeparatorStyle.TWO (llava_v1)
    ret = V1_SYS + seps[0]
    for i, (role, msg) in enumerate(messages):
        ret += (role + ": " + msg + seps[i % 2]) if msg else (role + ":")
    return ret


def ref_worker_prompt(question, dataset):
    """model_workers.py LLaVA.forward: CLEVR-Change fix, <ImageHere> -> <image>, the dataset's template."""
    question = question.replace("<ImageHere><ImageHere>", "<ImageHere>\n<ImageHere>\n")
    style = "llava_v1" if dataset == "Rouge_OCR_VQA" else "llava_llama_2"
    return ref_conversation(style, question.replace("<ImageHere>", "<image>"))


def ref_tokenizer_image_token(prompt, tokenizer):
    """mm_utils.py tokenizer_image_token."""
    chunks = [tokenizer(c).input_ids if len(c) > 0 else [tokenizer.bos_token_id] for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    sep = [ORIGINAL_IMAGE_TOKEN_INDEX] * (offset + 1)
    for x in [e for sub in zip(chunks, [sep] * len(chunks)) for e in sub][:-1]:
        ids.extend(x[offset:])
    return ids


def expanded(ids, image_id, n):
    out = []
    for i in ids:
        out += [image_id] * n if i == ORIGINAL_IMAGE_TOKEN_INDEX else [i]
    return out


# ----------------------------------------------------------------------------- fixtures
WORDS = ("red green blue circle square triangle star shape image table step goal change left right top bottom "
         "which what where how many is the a of in on to and answer question choice list your option find "
         "needle haystack document title page row column picture frame scene object difference describe").split()
INSTRUCTIONS = ["Look at the images and answer the question.",
                "Find the needle in the haystack: answer with the hidden word.",
                "Describe what changed between the two pictures."]


DATA = REPO / "tests" / "eval" / "milebench" / "data"


class Slow437:
    """transformers 4.37's slow ``LlamaTokenizer(legacy=False)`` (the original's) on text without special tokens:
    SentencePiece's own ids (BOS first by default) and decode, as ``test_the_slow_tokenizer_is_sentencepiece`` checks
    against ids and strings 4.37.2 produced (data/slow_llama_tokenizer_4_37.json, on data/tokenizer.model)."""

    def __init__(self, model_file, bos_token_id=1):
        import sentencepiece as spm

        self.sp, self.bos_token_id = spm.SentencePieceProcessor(model_file=str(model_file)), bos_token_id

    def __call__(self, text, add_special_tokens=True):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=([self.bos_token_id] if add_special_tokens else []) + self.sp.encode(text))

    def decode(self, ids):
        return self.sp.decode(list(ids))


def test_the_slow_tokenizer_is_sentencepiece():
    """The fact the reference tokenizer rests on, and our round trip's codec, against transformers 4.37.2's outputs
    (made offline in a venv with transformers==4.37.2; 4.37 cannot be installed beside 5 in the suite's venv)."""
    from SequentialPrune.frontends.milebench.inputs import SentencePieceText

    golden = json.loads((DATA / "slow_llama_tokenizer_4_37.json").read_text(encoding="utf-8"))
    ref, ours = Slow437(DATA / "tokenizer.model"), SentencePieceText(DATA / "tokenizer.model")
    assert "4.37.2" in golden["made_with"] and len(golden["rows"]) > 100
    for row in golden["rows"]:
        ids = row["ids"]
        assert ref(row["text"], add_special_tokens=False).input_ids == ids == ours(row["text"]).input_ids
        assert ref(row["text"]).input_ids == row["ids_with_bos"]
        assert ref.decode(ids) == row["decode"] == ours.decode(ids)
        assert ours.decode(ids[len(ids) // 2:]) == row["decode_tail"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A SentencePiece (Llama-style) checkpoint folder, the original's slow tokenizer on it, the fast one, and a
    llava-hf processor."""
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    d = tmp_path_factory.mktemp("sp")
    rng = np.random.default_rng(0)
    corpus = INSTRUCTIONS + [LLAMA_2_SYS, V1_SYS, "[INST] <<SYS>> <</SYS>> [/INST] USER: ASSISTANT:",
                             "Choice list: Your answer is: A. B. C. D. 12 345"]
    corpus += [" ".join(rng.choice(WORDS, 12)) + "." for _ in range(200)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=600, model_type="bpe", byte_fallback=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, allow_whitespace_only_pieces=True, character_coverage=1.0,
        minloglevel=2)
    (d / "tokenizer.model").write_bytes(model.getvalue())
    slow = Slow437(d / "tokenizer.model")
    fast = LlamaTokenizerFast.from_pretrained(str(d), add_bos_token=True)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = tc.tiny_llava_processor(tokenizer=fast, image_size=IMAGE_SIZE)
    return d, slow, fast, processor


def sentence(rng, n):
    return " ".join(rng.choice(WORDS, n))


def make_set(root, name, anns, question_type="multi-choice"):
    folder = root / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(
        {"meta_data": {"task_instruction": INSTRUCTIONS, "question_type": question_type}, "data": anns}))
    return folder


def ann(sid, context, images, response, instruction=0, **extra):
    inst = {"context": context, "images_path": images, **extra}
    return {"sample_id": sid, "task_instruction_id": instruction, "task_instance": inst, "response": response,
            "image_quantity_level": "Few"}


def cases(rng):
    """(dataset, annotation, combine_image, max_context_len): every kind of sample."""
    imgs = lambda n: [f"{i}.jpg" for i in range(n)]  # noqa: E731
    long = " ".join(f"{{image#{i + 1}}} {sentence(rng, 25)}" for i in range(24))
    return [
        ("ObjectShuffle", ann(1, "{image#1} then {image#2} and {image#3}. Where is the red circle?", imgs(3),
                              "left", choice_list=["left", "right", "top"]), None, 4096),
        ("GPR1200", ann(2, "{image#1} Which picture shows the same object?", imgs(1), "blue square",
                        choice_list=[sentence(rng, 2) for _ in range(30)] + ["blue square"]), None, 4096),
        ("SlideVQA", ann(3, "{table#1} {image#2}\nWhat is the title of the page?", imgs(2), "red star"), None, 4096),
        ("TextNeedleInAHaystack", ann(4, sentence(rng, 300) + " {image#1} " + sentence(rng, 200) + " {image#2} "
                                      "What is the needle?", imgs(2), "green", instruction=1), None, 4096),
        ("ALFRED", ann(5, "Goal: find the star. Step Details: {image#1} Step#1: left. {image#2} Step#2: right. "
                          "{image#3} Current Step: ", imgs(3), "left", combined_1_images=["5.jpg"]), 1, 4096),
        ("WebQA", ann(6, long + " Which image shows a triangle?", imgs(24), "image 3"), None, 4096),
        ("WebQA", ann(7, long + " Which image shows a triangle?", imgs(24), "image 3"), None, 700),
        ("TQA", ann(8, sentence(rng, 400) + " {image#1} What shape?", imgs(1), "circle"), None, 120),
        ("CLEVR-Change", ann(9, "{image#1}{image#2}What changed?", imgs(2), "the cube moved", instruction=2),
         None, 4096),
    ]


def write_images(folder, names, rng):
    for n in names:
        h, w = rng.integers(20, 60, 2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / n)


# ----------------------------------------------------------------------------- tests
def test_prompts_ids_and_images_are_the_originals(kit, tmp_path):
    from SequentialPrune.frontends.milebench.inputs import PaperLlavaInputs, image_runs
    from SequentialPrune.frontends.milebench.prompts import Budget, milebench_sample

    d, slow, fast, processor = kit
    inputs = PaperLlavaInputs(processor, str(d), "sentencepiece")
    assert type(inputs.text_tokenizer).__name__ == "SentencePieceText"
    rng = np.random.default_rng(1)
    n_tok = (IMAGE_SIZE // PATCH) ** 2
    kinds = set()
    for dataset, a, combine, max_len in cases(rng):
        folder = make_set(tmp_path, dataset, [a])
        ref = ref_getitem(a, INSTRUCTIONS, str(folder / "images"), max_len, 576, slow, dataset, combine)
        ours = milebench_sample(a, INSTRUCTIONS, folder, dataset, inputs.text_tokenizer, Budget(max_len, 576), combine)
        assert ours.context == ref["context"], (dataset, a["sample_id"])
        assert ours.response == ref["response"]
        if combine:  # the original swaps every "images" in the path for the combined folder; we swap the folder
            fake = ref_getitem(a, INSTRUCTIONS, "/data/MileBench/ALFRED/images", max_len, 576, slow, dataset, combine)
            mine = milebench_sample(a, INSTRUCTIONS, "/data/MileBench/ALFRED", dataset, inputs.text_tokenizer,
                                    Budget(max_len, 576), combine)
            assert mine.images == fake["raw_img_list"] == ["/data/MileBench/ALFRED/combined_1_images/5.jpg"]
        else:
            assert ours.images == ref["raw_img_list"]
        sub = folder / (f"combined_{combine}_images" if combine else "images")
        sub.mkdir(exist_ok=True)
        write_images(sub, [os.path.basename(p) for p in ours.images], rng)
        prompt = ref_worker_prompt(ref["context"], dataset)
        assert inputs.prompt(ours, dataset) == prompt
        got = inputs(ours, dataset)
        ids = got["input_ids"][0].tolist()
        assert ids == expanded(ref_tokenizer_image_token(prompt, slow), inputs.image_id, n_tok), (dataset, a)
        assert len(image_runs(ids, inputs.image_id)) == len(ours.images)
        if ours.images:
            assert tuple(got["pixel_values"].shape) == (len(ours.images), 3, IMAGE_SIZE, IMAGE_SIZE)
        else:
            assert "pixel_values" not in got
        kinds.add((dataset, len(ours.images)))
    # the cases do what they are meant to: truncation kept some of the 24 images, none with a tiny budget
    assert kinds >= {("GPR1200", 1), ("CLEVR-Change", 2), ("ALFRED", 1), ("TQA", 0), ("ObjectShuffle", 3)}
    webqa = sorted(n for ds, n in kinds if ds == "WebQA")
    assert len(webqa) == 2 and 0 < webqa[0] < webqa[1] < 24, webqa
    clevr = [c for c in cases(np.random.default_rng(1)) if c[0] == "CLEVR-Change"][0][1]
    s = milebench_sample(clevr, INSTRUCTIONS, tmp_path / "CLEVR-Change", "CLEVR-Change", inputs.text_tokenizer,
                         Budget())
    assert "<image>\n<image>\n" in inputs.prompt(s, "CLEVR-Change")


def test_gpr1200_lists_options_without_letters_and_others_with():
    from SequentialPrune.frontends.milebench.prompts import question_text

    inst = {"context": "Q?", "choice_list": ["x", "y"]}
    assert question_text(inst, "GPR1200") == "Q?\nChoice list: \nx\ny\nYour answer is: "
    assert question_text(inst, "ObjectShuffle") == "Q?\nChoice list: \nA. x\nB. y\nYour answer is: "


def test_templates_and_stop_keywords(kit):
    from SequentialPrune.frontends.milebench.data import Sample
    from SequentialPrune.frontends.milebench.inputs import PaperLlavaInputs

    d, slow, fast, processor = kit
    inputs = PaperLlavaInputs(processor, str(d), "sentencepiece")
    s = Sample(0, "<ImageHere>\nWhat is the title?", [], ["x"])
    for ds in ("Rouge_OCR_VQA", "ANLS_DocVQA", "WebQA"):
        assert inputs.prompt(s, ds) == ref_worker_prompt(s.context, ds)
    assert inputs.prompt(s, "Rouge_OCR_VQA").startswith(V1_SYS + " USER: <image>\n")
    assert inputs.prompt(s, "WebQA").startswith("[INST] <<SYS>>\n")
    # KeywordsStoppingCriteria: the keyword's ids without a leading BOS; "<s>" is BOS itself, "</s>" EOS
    assert inputs.stop_ids("WebQA") == [fast.bos_token_id]
    assert inputs.stop_ids("Rouge_OCR_VQA") == [fast.eos_token_id]


def test_chat_template_inputs_place_every_image():
    """The hf protocol: one image item per <ImageHere> (where the checkpoint's template puts image items: the tiny
    one puts them first), each expanded by the processor."""
    from transformers import AutoProcessor

    from SequentialPrune.frontends.milebench.data import Sample
    from SequentialPrune.frontends.milebench.inputs import ChatTemplateInputs, image_runs

    processor = AutoProcessor.from_pretrained(str(REPO / "checkpoints" / "tiny-shapes-llava"))
    b = ChatTemplateInputs(processor)
    imgs = [Image.new("RGB", (30 + 10 * i, 40), (40 * i, 0, 0)) for i in range(3)]
    s = Sample(0, "red <ImageHere> blue <ImageHere> green <ImageHere> which circle?", imgs, "x")
    prompt = b.prompt(s, "WebQA")
    assert prompt.count(processor.image_token) == 3
    assert prompt.index("red") < prompt.index("blue") < prompt.index("circle")
    ids = b(s, "WebQA")["input_ids"][0].tolist()
    assert sum(e - st for st, e in image_runs(ids, b.image_id)) == 3 * 64


def test_chat_template_inputs_take_the_pixel_bounds(tiny_qwen):
    """--min-pixels/--max-pixels reach a Qwen processor as its size bounds (not silently dropped)."""
    from transformers import AutoProcessor

    from SequentialPrune.frontends.milebench.data import Sample
    from SequentialPrune.frontends.milebench.inputs import ChatTemplateInputs

    processor = AutoProcessor.from_pretrained(str(tiny_qwen))
    s = Sample(0, "<ImageHere> what is it?", [Image.new("RGB", (640, 480))], "x")
    grids = [ChatTemplateInputs(processor, **kw)(s, "X")["image_grid_thw"].tolist()
             for kw in ({}, {"max_pixels": 112 * 112})]
    assert grids[0] != grids[1] and grids[1] == [[1, 6, 8]]  # 6x8 patches of 14 px: within 112*112 pixels


def test_extra_sets_loaders(tmp_path):
    """ANLS_DocVQA: imdb rows [1:200], lower-cased unique answers; Rouge_OCR_VQA: the first 200 validation images,
    every question, ids counted from 0 (the original's utils.py)."""
    import datasets

    from SequentialPrune.frontends.milebench.data import docvqa_samples, ocrvqa_samples

    header = {"version": "0.1"}
    rows = [header] + [{"question_id": 1000 + i, "question": f"q{i}?", "image_name": f"doc{i}",
                        "answers": ["Yes", "yes", "No"]} for i in range(250)]
    np.save(tmp_path / "imdb_val.npy", np.array(rows, dtype=object), allow_pickle=True)
    docs = docvqa_samples(tmp_path / "imdb_val.npy", tmp_path / "pages")
    assert len(docs) == 199 and docs[0].sample_id == 1000 and docs[-1].sample_id == 1198
    assert docs[0].context == "<ImageHere>\nq0?" and sorted(docs[0].response) == ["no", "yes"]
    assert docs[0].images == [str(tmp_path / "pages" / "doc0.png")]
    n = 203
    feats = datasets.Features({"image": datasets.Image(), "questions": datasets.Sequence(datasets.Value("string")),
                               "answers": datasets.Sequence(datasets.Value("string"))})
    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(n)],
         "questions": [[f"q{i}a", f"q{i}b"] if i % 2 else [f"q{i}a"] for i in range(n)],
         "answers": [[f"a{i}a", f"a{i}b"] if i % 2 else [f"a{i}a"] for i in range(n)]}, features=feats)
    (tmp_path / "ocr" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "ocr" / "data" / "validation-00000-of-00001.parquet"))
    ocr = ocrvqa_samples(tmp_path / "ocr")
    assert len(ocr) == 300  # 100 images with one question, 100 with two
    assert [s.sample_id for s in ocr[:3]] == [0, 1, 2] and ocr[1].response == ["a1a"] and ocr[2].response == ["a1b"]
    assert ocr[-1].context == "<ImageHere>\nq199b" and ocr[0].image_names == ["skip"]


def test_synthetic_benchmark_is_milebench_format(tmp_path, kit):
    """The demo's set: MileBench's layout, 2-8 images per sample, every kind of question."""
    from SequentialPrune.frontends.milebench.data import load_annotation
    from SequentialPrune.frontends.milebench.prompts import Budget, milebench_sample
    from SequentialPrune.frontends.milebench.synthetic import write_benchmark

    made = write_benchmark(tmp_path, n=6)
    kinds = set()
    for ds in made:
        ann = load_annotation(tmp_path / ds / f"{ds}.json")
        kinds.add(ann["meta_data"]["question_type"])
        for a in ann["data"]:
            s = milebench_sample(a, ann["meta_data"]["task_instruction"], tmp_path / ds, ds, kit[1], Budget())
            assert 2 <= len(s.images) <= 8 and all(os.path.isfile(p) for p in s.images)
            assert s.context.count("<ImageHere>") == len(s.images)
            if "choice_list" in a["task_instance"]:
                assert a["response"] in a["task_instance"]["choice_list"]
    assert kinds == {"multi-choice", "open-ended"} and any("NeedleInAHaystack" in d for d in made)
