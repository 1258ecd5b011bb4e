"""The evaluation core's boundaries: it imports no harness, nothing edits sys.path, and each model's setting is
resolved once into the one object its model class and its run record use."""
import ast
from pathlib import Path

import pytest
from paths import REPO

HARNESSES = ("vlmeval", "lmms_eval", "milebench")
CORE = REPO / "SequentialPrune" / "evaluation"
SHAPES_CKPT = REPO / "checkpoints" / "tiny-shapes-llava"


def _imports(path: Path):
    """(line, top-level module) of every import in ``path``, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def test_evaluation_core_imports_no_harness():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 15, files  # the core is where this test looks
    found = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in files for line, mod in _imports(p)
             if mod in HARNESSES]
    assert not found, "the evaluation core must not import a harness (move it to SequentialPrune/frontends):\n" + \
        "\n".join(found)


def test_no_module_of_the_package_edits_sys_path():
    edits = []
    for p in sorted((REPO / "SequentialPrune").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                edits.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert not edits, f"import through the installed package instead of sys.path: {edits}"


def test_eval_commands_are_thin_entry_points():
    """eval/VLMEvalKit holds the command and the demos; its Python is the installed front end."""
    py = sorted(p.name for p in (REPO / "eval" / "VLMEvalKit").glob("*.py"))
    assert py == ["run.py"], py
    assert "SequentialPrune.frontends.vlmevalkit.cli import main" in (REPO / "eval/VLMEvalKit/run.py").read_text()


def _setting(*flags):
    from SequentialPrune.frontends.vlmevalkit.flags import parse_flags
    return parse_flags([*flags, "--model-path", str(SHAPES_CKPT)])[0]


def test_a_model_run_carries_the_budget_solved_for_its_checkpoint(tmp_path):
    from SequentialPrune import PruneConfig
    from SequentialPrune.evaluation.resolve import resolve_model

    run = resolve_model("llava_seqprune", _setting("--prune-method", "fastv", "--prune-budget", "0.5"), str(tmp_path))
    # the tiny checkpoint: 12 decoder layers, 8x8 = 64 image tokens per image
    assert (run.num_layers, run.model_type, run.family) == (12, "llava", "llava")
    assert run.prune == PruneConfig.for_budget("fastv", 32, 64, 12)
    assert run.setting.prune == run.prune and run.setting.budget == 0.5  # the record shows what ran
    assert run.name == f"llava_seqprune_{run.prune.tag()}" and Path(run.run_dir) == tmp_path / run.name
    assert run.stats_dir == str(tmp_path / run.name / "seqprune_stats")


def test_the_run_identity_keeps_its_keys(tmp_path):
    """The identity is compared with the one recorded in a run folder at every launch, so its keys are pinned
    here: a key added or dropped makes every existing folder "another setting" (refused, never reused)."""
    from SequentialPrune.evaluation.resolve import resolve_model

    run = resolve_model("llava_seqprune", _setting("--prune-method", "sequential"), str(tmp_path), device="cpu")
    ident = run.identity()
    assert set(ident) == {"attn_impl", "dtype", "generation", "image_files", "max_new_tokens", "model", "model_name",
                          "model_path", "paper_tokenizer", "protocol", "prune"}
    assert ident["generation"] == {"do_sample": False, "num_beams": 1} and ident["image_files"] == "original-jpeg"
    assert ident["model"] == "llava_seqprune" and ident["protocol"] == "paper" and ident["dtype"] == "float32"
    assert ident["prune"] == run.prune.to_dict() and ident["model_name"] == run.name


def test_a_model_class_refuses_a_run_of_another_family(tmp_path):
    from SequentialPrune.evaluation.resolve import resolve_model
    from SequentialPrune.frontends.vlmevalkit.models import QwenVLSeqPrune

    run = resolve_model("llava_seqprune", _setting("--prune-method", "none"), str(tmp_path))
    with pytest.raises(ValueError, match="runs the qwen family, not llava_seqprune"):
        QwenVLSeqPrune(run)


def test_every_catalog_family_has_its_vlmevalkit_class_and_models():
    from SequentialPrune.evaluation.catalog import FAMILIES, MODELS
    from SequentialPrune.frontends.vlmevalkit.models import (
        CLASSES,
        ORIGINAL_MODEL_NAMES,
        VLMEVAL_TWINS,
    )

    assert set(CLASSES) == set(FAMILIES), "one VLMEvalKit model class per catalog family (its FAMILY attribute)"
    assert {spec.family for spec in MODELS.values()} == set(FAMILIES), "every family has a model name"
    assert set(VLMEVAL_TWINS) <= set(MODELS) and set(ORIGINAL_MODEL_NAMES.values()) <= set(MODELS)


def test_a_wrong_lmudata_fails_before_torch_loads(tmp_path):
    """run.py's first check needs no torch: a mistyped $LMUData is refused at once, not after the imports."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['run.py', '--data', 'X', '--model', 'y']\n"
            "from SequentialPrune.frontends.vlmevalkit.cli import main\n"
            "rc = main(); print('rc', rc, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "LMUData"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                       timeout=60)
    assert "rc 2 False" in p.stdout, p.stdout + p.stderr
    assert "$LMUData is not set" in p.stderr


def test_replacing_leaves_the_old_file_until_the_new_one_is_whole(tmp_path):
    from SequentialPrune.evaluation.safe_io import replacing

    target = tmp_path / "table.xlsx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            assert tmp.endswith(".xlsx") and tmp != str(target)  # writers that pick the format by it still work
            Path(tmp).write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.xlsx"]
    with replacing(target) as tmp:
        Path(tmp).write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["table.xlsx"]
