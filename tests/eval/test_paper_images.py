"""The image files and the decoding arguments of the paper protocol, against the original code re-derived here.

The original (LeeBumSeok/Tokenpruning @ 0898f4a) is re-implemented in this file from its vendored VLMEvalKit,
never imported from ours:

* ``vlmeval/dataset/image_base.py:102-121`` ``dump_image``: one image -> ``{index}.jpg`` (whatever
  ``image_path`` says), several -> the ``image_path`` names, none -> the ``image_path`` files;
* ``vlmeval/smp/vlm.py:101-113``: ``Image.open(BytesIO(b64decode(s)))``, RGBA and P converted to RGB,
  ``image.save(path)`` (the format from the extension, PIL's defaults);
* ``vlmeval/vlm/qwen2_vl/model.py:40-62``: Qwen2-VL's generate arguments.
"""
import base64
import io
import json
import os.path as osp
from pathlib import Path

import pytest
from PIL import Image

from SequentialPrune.frontends.vlmevalkit import image_files

SIZE = (48, 40)


def original_decode_to_file(b64: str, path: str) -> None:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")
    image.save(path)


def original_dump_image(line: dict, img_root: str):
    if "image" in line:
        if isinstance(line["image"], list):
            assert "image_path" in line
            out = []
            for img, name in zip(line["image"], line["image_path"]):
                path = osp.join(img_root, name)
                if not osp.exists(path):
                    original_decode_to_file(img, path)
                out.append(path)
            return out
        path = osp.join(img_root, f"{line['index']}.jpg")
        if not osp.exists(path):
            original_decode_to_file(line["image"], path)
        return [path]
    return [line["image_path"]] if isinstance(line["image_path"], str) else list(line["image_path"])


def payload(mode: str, fmt: str) -> str:
    """A photo-like image (gradients and texture, so JPEG's loss shows) in ``mode``, encoded as ``fmt``."""
    import numpy as np

    rng = np.random.default_rng(len(mode) + len(fmt))
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    rgb = np.stack([x * 5, y * 6, rng.integers(0, 256, x.shape)], -1).astype(np.uint8)
    img = Image.fromarray(rgb)
    img = img.convert("P") if mode == "P" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


class Dataset:
    """What dump_image reads of a VLMEvalKit dataset: its image folder, and VLMEvalKit 0.0.20's own rule."""

    def __init__(self, img_root: Path):
        from vlmeval.dataset.image_base import ImageBaseDataset

        self.img_root = str(img_root)
        self.dataset_name = "Rows"
        self.dump_image = ImageBaseDataset.dump_image.__get__(self)


ROWS = {
    "png": dict(index=1, image=payload("RGB", "PNG")),
    "jpeg": dict(index=2, image=payload("RGB", "JPEG")),
    "rgba": dict(index=3, image=payload("RGBA", "PNG")),
    "palette": dict(index=4, image=payload("P", "PNG")),
    "cmyk": dict(index=5, image=payload("CMYK", "JPEG")),
    "grey": dict(index=6, image=payload("L", "PNG")),
    "named": dict(index=7, image=payload("RGB", "PNG"), image_path="page_7.png"),  # the original ignores the name
    "several": dict(index=8, image=[payload("RGB", "PNG"), payload("RGB", "JPEG")], image_path=["8a.png", "8b.jpg"]),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_paper_protocol_reads_the_originals_files(tmp_path, name):
    """Byte for byte the files the original's model opened: a PNG payload is re-encoded as JPEG, CMYK saved as
    CMYK JPEG; and the model's RGB pixels of them equal the original's."""
    ours_root, ref_root = tmp_path / "ours", tmp_path / "original"
    ref_root.mkdir()
    line = dict(ROWS[name])
    dataset = Dataset(ours_root)
    ours = image_files.install(dataset, "paper")(line)
    ref = original_dump_image(line, str(ref_root))
    assert [Path(p).name for p in ours] == [Path(p).name for p in ref]
    assert all(Path(p).parent == ours_root / "seqprune-paper-jpeg" for p in ours)  # not VLMEvalKit's own files
    for a, b in zip(ours, ref):
        assert Path(a).read_bytes() == Path(b).read_bytes()
        assert Image.open(a).convert("RGB").tobytes() == Image.open(b).convert("RGB").tobytes()
    if name in ("png", "grey", "rgba", "palette"):  # lossless payloads: the original's model saw JPEG's loss
        lossless = Image.open(io.BytesIO(base64.b64decode(line["image"]))).convert("RGB").tobytes()
        assert Image.open(ours[0]).convert("RGB").tobytes() != lossless
    assert image_files.install(dataset, "paper")(line) == ours  # served again, not rewritten


def test_paper_protocol_reads_image_path_files_as_they_are(tmp_path):
    img = tmp_path / "shipped.png"
    Image.new("RGB", SIZE, (10, 20, 30)).save(img)
    line = dict(index=9, image_path=str(img))
    assert image_files.install(Dataset(tmp_path / "root"), "paper")(line) == original_dump_image(line, "") == [str(img)]


def test_hf_protocol_keeps_vlmevalkits_files_and_answers_cmyk(tmp_path):
    """hf: VLMEvalKit 0.0.20's lossless {index}.png; a CMYK image, which its PNG save refuses, becomes RGB."""
    dataset = Dataset(tmp_path / "hf")
    line = dict(ROWS["png"])
    (path,) = image_files.install(dataset, "hf")(line)
    assert Path(path).name == "1.png"
    decoded = Image.open(io.BytesIO(base64.b64decode(line["image"]))).convert("RGB").tobytes()
    assert Image.open(path).convert("RGB").tobytes() == decoded
    with pytest.raises(OSError, match="CMYK"):  # VLMEvalKit alone
        Dataset(tmp_path / "alone").dump_image(dict(ROWS["cmyk"]))
    (cmyk,) = image_files.install(dataset, "hf")(dict(ROWS["cmyk"]))
    cmyk_src = Image.open(io.BytesIO(base64.b64decode(ROWS["cmyk"]["image"])))
    assert Image.open(cmyk).mode == "RGB" and Image.open(cmyk).tobytes() == cmyk_src.convert("RGB").tobytes()
    # one dataset instance, models of both protocols in one launch: each gets its own files
    assert Path(image_files.install(dataset, "paper")(line)[0]).name == "1.jpg"
    assert image_files.install(dataset, "hf")(line) == [path]


def test_qwen_paper_protocol_decodes_with_the_originals_arguments(tmp_path):
    """A checkpoint whose generation_config says repetition_penalty=1.05, do_sample=true, top_k=1: under the
    paper protocol the original's arguments win (repetition_penalty 1.0, ...), do_sample stays the checkpoint's
    as in the original; under hf decoding is greedy and the checkpoint's penalty applies."""
    from SequentialPrune.frontends.vlmevalkit.flags import parse_flags
    from SequentialPrune.frontends.vlmevalkit.models import QwenVLSeqPrune, resolve
    from scripts.tiny import checkpoints as tc

    ckpt = tc.build_tiny_qwen2vl(tmp_path / "qwen", num_layers=2)
    gen = json.loads((Path(ckpt) / "generation_config.json").read_text())
    gen.update(repetition_penalty=1.05, do_sample=True, top_k=1)
    (Path(ckpt) / "generation_config.json").write_text(json.dumps(gen))
    original = dict(max_new_tokens=50, top_p=0.001, top_k=1, temperature=0.01, repetition_penalty=1.0, num_beams=1)
    got = {}
    for protocol in ("paper", "hf"):
        s = parse_flags(["--model-path", str(ckpt), "--prune-method", "none", "--protocol", protocol])[0]
        got[protocol] = QwenVLSeqPrune(resolve("qwen2vl_seqprune", s, str(tmp_path / protocol))).effective_generation()
    assert {k: got["paper"][k] for k in original} == original and got["paper"]["do_sample"] is True
    assert got["hf"]["do_sample"] is False and got["hf"]["num_beams"] == 1 and got["hf"]["repetition_penalty"] == 1.05


def test_a_sentencepiece_checkpoint_without_tokenizer_model_is_warned_at_launch(tmp_path, capsys):
    from dataclasses import replace

    from SequentialPrune.evaluation.resolve import resolve_model
    from SequentialPrune.frontends.vlmevalkit.flags import parse_flags
    from SequentialPrune.frontends.vlmevalkit.launch import _warn_paper_tokenizer
    from paths import REPO

    ckpt = REPO / "checkpoints" / "tiny-shapes-llava"  # a word-level tokenizer: nothing to warn about
    run = resolve_model("llava_seqprune", parse_flags(["--model-path", str(ckpt)])[0], str(tmp_path))
    assert run.get("paper_tokenizer") == "checkpoint"
    _warn_paper_tokenizer(run)
    assert "WARNING" not in capsys.readouterr().err
    llama = tmp_path / "llama-like"
    llama.mkdir()
    (llama / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"\u2581the": 0}}}))
    _warn_paper_tokenizer(replace(run, model_path=str(llama)))
    err = capsys.readouterr().err
    assert "WARNING: llava_seqprune" in err and str(llama / "tokenizer.model") in err
