"""The trained tiny shapes LLaVA: checkpoint health, the training script, its benchmark."""

import json
import os

import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from paths import REPO  # noqa: E402
from SequentialPrune import PruneConfig  # noqa: E402
from scripts.tiny import checkpoints as tc  # noqa: E402
from scripts.tiny import lmudata as syn  # noqa: E402
from scripts.tiny import scenes as sc  # noqa: E402
from scripts.tiny import study  # noqa: E402
from scripts.tiny import train  # noqa: E402

CKPT = REPO / "checkpoints" / "tiny-shapes-llava"


@pytest.fixture(scope="module")
def trained():
    return tc.load_tiny(CKPT)


@pytest.fixture(scope="module")
def held_out():
    # 12 questions per shipped type, from the study's held-out seed range.
    return sc.held_out_questions(12 * len(sc.SHIPPED_TYPES))


def test_checkpoint_is_small_fp16_and_answers_short():
    weights = CKPT / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    config = json.loads((CKPT / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] >= 12  # K=2,3 at R=0.9 with 10% steps
    assert config["image_seq_length"] >= 64
    assert json.loads((CKPT / "generation_config.json").read_text())["max_new_tokens"] <= 8
    assert (CKPT / "README.md").is_file()


def test_checkpoint_accuracy_unpruned(trained, held_out):
    processor, model = trained
    assert next(model.parameters()).dtype == torch.float32
    correct, _ = study.evaluate(processor, model, held_out, None, batch=len(held_out))
    assert sum(correct) / len(correct) >= 0.9, study.summarise(held_out, correct)


def test_checkpoint_prunes_with_real_removal(trained, held_out):
    processor, model = trained
    items = held_out[:12]
    cfg = PruneConfig("sequential", ratio=0.5, layer=2)
    correct, avg = study.evaluate(processor, model, items, cfg, batch=len(items))
    n = model.config.image_seq_length
    assert avg == pytest.approx(cfg.average_image_tokens(n, model.config.text_config.num_hidden_layers))
    assert len(correct) == len(items)


def test_quick_training_run(tmp_path):
    out = tmp_path / "quick"
    # importing vlmeval (as the eval tests do) turns autograd off process-wide: training must still work
    with torch.no_grad():
        assert train.main(["--quick", "--out", str(out)]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["log"] and "val_mean" in log["log"][-1]
    processor, model = tc.load_tiny(out)
    image, row = sc.held_out_questions(1)[0]
    inputs = study.build_inputs(processor, [(image, row)])
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 64
    ids = model.generate(**inputs, do_sample=False)
    assert ids.shape[1] <= inputs["input_ids"].shape[1] + 4


def test_benchmark_has_only_shipped_types_from_held_out_seeds(tmp_path):
    paths = syn.write_shapes_benchmarks(tmp_path, n=6)
    names = syn.synthetic_dataset_names("SeqPruneShapes")
    kinds = [k for k in names if k in set(sc.SHIPPED_TYPES.values())]
    assert list(paths) == [names[k] for k in kinds]
    for kind, path in zip(kinds, paths.values()):
        frame = pd.read_csv(path, sep="\t")
        assert {sc.SHIPPED_TYPES[c] for c in frame["category"]} == {kind}
    with pytest.raises(ValueError):
        sc.held_out_questions(1, seed=0)  # training range


def test_all_methods_study_solves_every_method_at_each_budget():
    """--all-methods: each method at the papers' budgets (1/3, 2/9, 1/9 of N); what no setting reaches is kept as a
    row saying so, never approximated."""
    rows = study.method_settings(12, 64, (1 / 3, 2 / 9, 1 / 9))
    labels = [label for _, label, _ in rows]
    assert labels[0] == "none" and len(rows) == 1 + 3 * len(study.ALL_METHODS)
    for frac in (1 / 3, 2 / 9, 1 / 9):
        for _, label, cfg in rows[1:]:
            if f"avg={frac:.3g}N" not in label:
                continue
            if isinstance(cfg, ValueError):
                assert label.endswith("unreachable") and "closest" in str(cfg)
            else:
                assert cfg.average_image_tokens(64, 12) <= frac * 64 + 1e-9
    # methods that prune before the decoder reach even the lowest budget
    assert not any(isinstance(c, ValueError) for _, l, c in rows if l.startswith(("divprune", "spatial")))


def test_all_methods_study_rows_filter():
    """--rows keeps the method rows whose label contains a given text (to re-measure some methods), and refuses
    a text that matches none."""
    rows = study.method_settings(12, 64, (1 / 2,), ["dart"])
    assert [label.split(" avg=")[0] for _, label, _ in rows] == ["none", "dart K=2", "sequential+dart K=2"]
    with pytest.raises(SystemExit, match="matches no method row"):
        study.method_settings(12, 64, (1 / 2,), ["dartt"])
    with pytest.raises(SystemExit, match="--all-methods"):
        study.main(["--rows", "dart", "--n", "1"])


# ----------------------------------------------------------------------------- the multi-image checkpoint
MULTI = REPO / "checkpoints" / "tiny-shapes-llava-multi"


def test_multi_training_prompts_are_the_milebench_front_ends(tmp_path):
    """train_multi.py's ids and pixels of a sample equal what generate.py feeds the model for it in the demo (its
    flags, the written files), on every synthetic set; and its questions about one image set share the prompt up
    to the last image."""
    import random

    from transformers import AutoProcessor

    from scripts.tiny import train_multi
    from SequentialPrune.frontends.milebench import synthetic
    from SequentialPrune.frontends.milebench.flags import parse
    from SequentialPrune.frontends.milebench.generate import sample_builders
    from SequentialPrune.frontends.milebench.inputs import PaperLlavaInputs

    demo = (REPO / "eval" / "MileBench" / "demo_tiny.sh").read_text()
    assert "--n-tokens-per-image 64" in demo and "tiny-shapes-llava-multi" in demo
    processor = AutoProcessor.from_pretrained(str(MULTI))
    front = PaperLlavaInputs(processor, str(MULTI), "checkpoint")
    rows = train_multi.MultiRows(processor, 64)
    made = synthetic.write_benchmark(tmp_path / "data", n=3)  # seed 0
    again = random.Random(0)  # write_benchmark's stream (seed 0): make_sample gives each sample's images again
    for ds in made:
        args, _ = parse(["--data_dir", str(tmp_path / "data"), "--dataset_name", ds, "--model_name", "llava_seqprune",
                         "--model-path", str(MULTI), "--output_dir", str(tmp_path / "out"),
                         "--max-new-tokens", "4", "--n-tokens-per-image", "64"])
        made_here = [synthetic.make_sample(again, ds, sid) for sid in range(3)]
        for sid, build in sample_builders(args, ds, front.text_tokenizer):  # grouped by image count
            entry, imgs = made_here[sid]
            want = front(build(), ds)
            assert rows.ids(entry, ds) == want["input_ids"][0].tolist()
            drawn = [synthetic.draw(shape, colour) for _, shape, colour in imgs]
            assert (rows.pixels(drawn) - want["pixel_values"]).abs().max() < 1e-6
    prefix, segs, images, pairs = rows.row(random.Random(5), "SynthShapesOpen", 4, n_images=5)
    assert len(segs) == 4 and len(images) == 5 and prefix.count(front.image_id) == 5 * 64
    assert all(front.image_id not in q for q, _ in segs)


def test_multi_checkpoint_is_small_and_records_its_training():
    weights = MULTI / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    config = json.loads((MULTI / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] >= 12 and config["image_seq_length"] == 64
    assert json.loads((MULTI / "generation_config.json").read_text())["max_new_tokens"] <= 8
    log = json.loads((MULTI / "training_log.json").read_text())
    assert log["args"]["init"].endswith("tiny-shapes-llava") and log["previous"]["args"]["layers"] == 12
    assert (MULTI / "README.md").is_file()
    processor, model = tc.load_tiny(MULTI)
    assert model.config.image_token_index == processor.tokenizer.convert_tokens_to_ids("<image>")


def test_quick_multi_training_run(tmp_path):
    from scripts.tiny import train_multi

    init = tc.build_tiny_llava(tmp_path / "init", num_layers=4)
    with torch.no_grad():  # as in test_quick_training_run: training must not depend on autograd being on
        assert train_multi.main(["--quick", "--init", str(init), "--out", str(tmp_path / "out"),
                                 "--index-layer", "2"]) == 0
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert {"val_SynthShapesMCQ", "val_SynthShapesOpen"} <= set(log["log"][-1])
    tc.load_tiny(tmp_path / "out")
