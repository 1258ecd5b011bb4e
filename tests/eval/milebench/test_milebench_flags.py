"""The MileBench command line: the original generate.py's arguments and pruning flags, ours, and refusals."""
import pytest
from eval_helpers import REPO

CKPT = str(REPO / "checkpoints" / "tiny-shapes-llava")


def parse(*argv):
    from SequentialPrune.frontends.milebench.flags import parse as p

    return p(list(argv))


def test_original_flags_are_aliases():
    args, s = parse("--dataset_name", "GPR1200", "--model_name", "llava-v1.5-7b", "--use-fast-v",
                    "--fast-v-sequential-prune", "--fast-v-agg-layer", "3", "--fast-v-attention-rank", "0.75",
                    "--prune-step", "5", "--fast-v-inplace", "--batch-image", "8", "--bsz", "1")
    assert args.base == "llava_seqprune" and args.datasets == ["GPR1200"] and args.batch_image == 8
    assert (s.prune.method, s.prune.ratio, s.prune.layer, s.prune.step) == ("sequential", 0.75, 3, 0.05)
    assert s.prune.cache_mode == "recompute" and s.prune.score_dtype == "model" and s.legacy_flags
    assert (args.max_context_len, args.n_tokens_per_image) == (4096, 576)
    args, s = parse("--dataset-name", "A", "B", "A", "--model-name", "qwen2vl_seqprune", "--prune-method", "fastv",
                    "--prune-budget", "0.5")
    assert args.datasets == ["A", "B"] and s.protocol == "hf" and s.budget == 0.5  # no paper MileBench for Qwen
    args, s = parse("--dataset_name", "X", "--model_name", "qwen2vl_seqprune", "--max-pixels", "12544")
    assert s.max_pixels == 12544


def test_model_configs_yaml(tmp_path):
    cfg = tmp_path / "model_configs.yaml"
    cfg.write_text(f"llava-v1.5-7b:\n  model_name: llava-v1.5\n  model_dir: {CKPT}\n  gen_kwargs:\n"
                   "    max_new_tokens: 64\n  max_context_len: 2048\n  n_tokens_per_image: 100\n")
    args, s = parse("--dataset_name", "X", "--model_name", "llava-v1.5-7b", "--model_configs", str(cfg))
    assert s.model_path == CKPT and s.max_new_tokens is None and args.configured_max_new_tokens == 64
    assert (args.max_context_len, args.n_tokens_per_image) == (2048, 100)
    from SequentialPrune.frontends.milebench.models import decoding_values

    # the original: the config's length is the default, DocVQA and OCR-VQA keep their own 100 and 50
    values = decoding_values(s.max_new_tokens, args.configured_max_new_tokens)
    assert values["milebench_max_new_tokens"] == 64
    assert values["milebench_dataset_max_new_tokens"] == {"ANLS_DocVQA": 100, "Rouge_OCR_VQA": 50}
    assert decoding_values(32, 64)["milebench_dataset_max_new_tokens"] == {}  # --max-new-tokens: every set


@pytest.mark.parametrize("argv, message", [
    (["--dataset_name", "X", "--model_name", "InternVL-LLava-7B"], "transformers does not ship"),
    (["--dataset_name", "X", "--model_name", "gpt4"], "not one of ours"),
    (["--dataset_name", "X", "--model_name", "qwen2vl_seqprune", "--protocol", "paper"], "ran LLaVA only"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--frobnicate"], "unknown arguments"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--register-dataset", "A=mcq"], "VLMEvalKit's"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--fast-v-agg-layer", "2"], "only take effect"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--prune-step", "0"], "percentage points"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--combine_image", "0"], "must be >= 1"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--max-pixels", "5000"], "Qwen models only"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--batch-size", "4", "--batch-image", "8"],
     "give one of them"),
    (["--dataset_name", "X", "--model_name", "llava_seqprune", "--batch-size", "0"], "must be >= 1"),
])
def test_bad_command_lines_fail_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "generate.py: error:" in err


def test_missing_data_is_refused_before_any_model(tmp_path, capsys):
    from SequentialPrune.frontends.milebench.generate import main

    assert main(["--data_dir", str(tmp_path), "--dataset_name", "GPR1200", "--model_name", "llava_seqprune",
                 "--model-path", CKPT, "--output_dir", str(tmp_path / "o")]) == 2
    assert "GPR1200.json" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["--dataset_name", "ANLS_DocVQA", "--model_name", "llava_seqprune", "--model-path", CKPT,
                 "--output_dir", str(tmp_path / "o")]) == 2
    assert "--docvqa-ann" in capsys.readouterr().err


def test_batches_follow_the_original_rule_or_a_fixed_size():
    """--batch-image N: consecutive samples of one image count, max(N // images, 1) per call (the original's
    DataLoader over samples grouped by image count); --batch-size N: N consecutive samples of any counts."""
    from SequentialPrune.frontends.milebench.generate import batches

    def item(sid, n):
        build = lambda: None  # noqa: E731
        build.n_images = n
        return (sid, build)

    items = [item(i, n) for i, n in enumerate([2, 2, 2, 4, 4, 1, 1, 1, 1, 1])]
    ids = lambda bs: [[sid for sid, _ in b] for b in bs]  # noqa: E731
    args, _ = parse("--dataset_name", "X", "--model_name", "llava_seqprune", "--batch-image", "4")
    assert ids(batches(items, args)) == [[0, 1], [2], [3], [4], [5, 6, 7, 8], [9]]
    args, _ = parse("--dataset_name", "X", "--model_name", "llava_seqprune", "--batch-size", "4")
    assert ids(batches(items, args)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    args, _ = parse("--dataset_name", "X", "--model_name", "llava_seqprune")
    assert ids(batches(items, args)) == [[i] for i in range(10)]
