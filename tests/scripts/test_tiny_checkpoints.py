"""Offline CPU tests for scripts/tiny/checkpoints.py and scripts/tiny/lmudata.py."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from scripts.tiny import checkpoints as tc  # noqa: E402
from scripts.tiny import lmudata as syn  # noqa: E402

# family -> image tokens for a 112 px image
IMAGE_TOKENS = {"llava": 64, "qwen2vl": 16, "qwen2_5vl": 16}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: tc.build_tiny_checkpoint(fam, root / fam) for fam in IMAGE_TOKENS}


def _images():
    gradient = Image.radial_gradient("L").convert("RGB").resize((112, 112))
    return [Image.new("RGB", (112, 112), "red"), gradient]


@pytest.mark.parametrize("family", sorted(IMAGE_TOKENS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_answer_letter_then_eos(checkpoints, family, attn):
    processor, model = tc.load_tiny(checkpoints[family], attn_implementation=attn)
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert gen.max_new_tokens <= 8
    for image in _images():
        new, text = tc.greedy_answer(processor, model, image, "What colour is the circle?")
        assert text == "A"
        assert new[0] == processor.tokenizer.convert_tokens_to_ids("A") and new[1] in eos
        assert len(new) == 2


@pytest.mark.parametrize("family", sorted(IMAGE_TOKENS))
def test_image_tokens_and_image_dependence(checkpoints, family):
    processor, model = tc.load_tiny(checkpoints[family])
    assert processor.tokenizer.padding_side == "left"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is it red?"}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    if family == "llava":
        assert prompt == "USER: <image>\nIs it red? ASSISTANT:"
    else:
        assert "<|vision_start|><|image_pad|><|vision_end|>Is it red?<|im_end|>" in prompt
        assert prompt.endswith("<|im_start|>assistant\n")
    logits = []
    for image in _images():
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        assert ids.count(model.config.image_token_id) == IMAGE_TOKENS[family]
        assert processor.tokenizer.unk_token_id not in ids  # prompt words are in the vocabulary
        if family != "llava":
            assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    # The answer trick pins the argmax only; the rest of the logits still see the image.
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    # A plain string content renders too.
    plain = processor.apply_chat_template([{"role": "user", "content": "Is it red?"}],
                                          add_generation_prompt=True)
    assert "Is it red?" in plain and "<image>" not in plain and "<|image_pad|>" not in plain


def test_in_memory_configs():
    llava = tc.tiny_llava_config(num_layers=2)
    assert llava.text_config.num_hidden_layers == 2 and llava.image_seq_length == 64
    for qwen2_5 in (False, True):
        cfg = tc.tiny_qwen2vl_config(num_layers=2, hidden_size=128, qwen2_5=qwen2_5)
        text = cfg.text_config
        head_dim = text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2


def test_stamp_reuse_and_cli(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert tc.main(["--family", "qwen2vl", "--out", str(out), "--layers", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    weights = out / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    tc.build_tiny_checkpoint("qwen2vl", out, num_layers=2)
    assert weights.stat().st_mtime_ns == mtime  # same arguments: reused
    tc.build_tiny_checkpoint("qwen2vl", out, num_layers=2, seed=1)
    assert weights.stat().st_mtime_ns != mtime  # different arguments: rebuilt


def test_synthetic_tsvs_are_deterministic(tmp_path):
    a = syn.write_synthetic_benchmarks(tmp_path / "a", n=6)
    b = syn.write_synthetic_benchmarks(tmp_path / "b", n=6)
    assert list(a) == list(syn.synthetic_dataset_names().values())
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_synthetic_datasets_in_vlmeval(tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(tmp_path))
    paths = syn.write_synthetic_benchmarks(tmp_path, n=8)
    from vlmeval.dataset import (DATASET_TYPE, ImageMCQDataset, ImageVQADataset,
                                 ImageYORNDataset, build_dataset)

    for cls in (ImageMCQDataset, ImageVQADataset, ImageYORNDataset):  # undo registration after
        monkeypatch.setattr(cls, "DATASET_URL", dict(cls.DATASET_URL))
    syn.register_synthetic_datasets(paths)
    names = syn.synthetic_dataset_names()
    expected = {"MCQ": (ImageMCQDataset, "MCQ"), "YN": (ImageYORNDataset, "Y/N"),
                "VQA": (ImageVQADataset, "VQA")}
    for kind, name in names.items():
        ds = build_dataset(name)
        cls, type_ = expected[kind]
        assert type(ds) is cls and DATASET_TYPE(name) == type_
        assert len(ds) == 8
        msgs = ds.build_prompt(ds.data.iloc[0])
        assert msgs[0]["type"] == "image" and Image.open(msgs[0]["value"]).size == (112, 112)
    assert set(build_dataset(names["MCQ"]).data["answer"]) <= set("ABCD")
    assert set(build_dataset(names["YN"]).data["answer"]) == {"Yes", "No"}

    # The "GQA" name gives plain exact-match accuracy: half right -> 50.
    ds = build_dataset(names["VQA"])
    data = ds.data.drop(columns="image")
    data["prediction"] = [str(a).upper() if i % 2 else "wrong" for i, a in enumerate(data["answer"])]
    eval_file = tmp_path / "out" / f"tiny_{names['VQA']}.xlsx"
    eval_file.parent.mkdir()
    data.to_excel(eval_file, index=False)
    assert ds.evaluate(str(eval_file))["Overall"].iloc[0] == pytest.approx(50.0)
