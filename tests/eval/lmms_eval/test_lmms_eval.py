"""The lmms-eval front end end to end: an unmodified lmms-eval finds our models through the entry point and runs
them on a local parquet task, offline, on tiny checkpoints of two families.

Four ``python -m lmms_eval`` launches serve every assertion (module-scoped), pruned with FastV: the trained tiny
LLaVA and a tiny Qwen2-VL, each at batch 1 and batch 4, on images of three sizes, so that the Qwen rows have
different image-token counts and its batch 4 mixes them in one ``generate`` call (each row pruned by its own
schedule).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from tiny_task import MC_TASK, TASK, write_task

LLAVA = Path(__file__).parents[3] / "checkpoints" / "tiny-shapes-llava"
BROKEN = 5  # doc_to_visual raises for this row: a failed sample, recorded, the others answered
N_ROWS = 9
# stats fields that measure time or the batch, not the sample
TIMING = ("prefill_time_s", "batch_prefill_time_s", "generate_time_s", "batch_rows", "logged_at")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The local parquet task: held-out shapes questions, three image sizes, one broken row."""
    return write_task(tmp_path_factory.mktemp("lmms_task"), N_ROWS, broken=(BROKEN,))


def launch(task_dir: Path, out: Path, model: str, model_args: str, batch: int, tasks: str = TASK,
           nproc: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(out / "hf_datasets"), TOKENIZERS_PARALLELISM="false")
    env.pop("LMMS_EVAL_PLUGINS", None)  # the entry point alone must find our models
    # --standalone: torchrun binds a free port itself, so parallel test workers never race for 29500
    runner = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc-per-node={nproc}"]
    cmd = [*runner, "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", tasks,
           "--include_path", str(task_dir), "--batch_size", str(batch), "--output_path", str(out), "--log_samples"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


class Run:
    """One launch's outputs: lmms-eval's logged samples and our run folder."""

    def __init__(self, out: Path, proc: subprocess.CompletedProcess):
        self.out, self.proc = out, proc
        settings = list(out.glob("*/seqprune_setting.json"))
        assert len(settings) == 1, settings
        self.dir = settings[0].parent
        samples = list(out.glob(f"*/*_samples_{TASK}.jsonl"))
        assert len(samples) == 1, samples
        self.predictions = {}
        for line in samples[0].read_text().splitlines():
            rec = json.loads(line)
            resp = rec["filtered_resps"]
            self.predictions[rec["doc_id"]] = resp[0] if isinstance(resp, list) else resp
        self.stats = {}
        for f in (self.dir / "seqprune_stats").glob(f"{TASK}.rank*.jsonl"):
            for line in f.read_text().splitlines():
                rec = json.loads(line)
                assert rec["index"] not in self.stats, f"doc {rec['index']} logged twice"
                self.stats[rec["index"]] = rec
        self.failures = [json.loads(x) for f in (self.dir / "seqprune_failures").glob(f"{TASK}.rank*.jsonl")
                         for x in f.read_text().splitlines()]
        self.results = json.loads((self.dir / "seqprune_results.json").read_text())
        self.setting = json.loads((self.dir / "seqprune_setting.json").read_text())

    def sample_stats(self):
        return {i: {k: v for k, v in s.items() if k not in TIMING} for i, s in self.stats.items()}


# One fixture per launch, so that each test's setup runs at most one launch (CI times each phase).
LLAVA_ARGS = f"pretrained={LLAVA},prune_method=fastv,prune_ratio=0.5,prune_layer=2"
QWEN_ARGS = "pretrained={},prune_method=fastv,prune_ratio=0.5,prune_layer=1"


def run_lmms(task_dir, tmp_path_factory, model: str, model_args: str, batch: int, tasks: str = TASK,
             nproc: int = 1) -> Run:
    out = tmp_path_factory.mktemp(f"{model}_b{batch}_p{nproc}")
    return Run(out, launch(task_dir, out, model, model_args, batch, tasks, nproc))


@pytest.fixture(scope="module")
def llava_run(task_dir, tmp_path_factory) -> Run:
    return run_lmms(task_dir, tmp_path_factory, "seqprune_llava", LLAVA_ARGS, 4)


@pytest.fixture(scope="module")
def llava_b1(task_dir, tmp_path_factory) -> Run:
    """Batch 1, with the likelihood-scored twin task in the same launch."""
    return run_lmms(task_dir, tmp_path_factory, "seqprune_llava", LLAVA_ARGS, 1, f"{TASK},{MC_TASK}")


@pytest.fixture(scope="module")
def qwen_b1(task_dir, tiny_qwen, tmp_path_factory) -> Run:
    return run_lmms(task_dir, tmp_path_factory, "seqprune", QWEN_ARGS.format(tiny_qwen), 1)  # dispatches


@pytest.fixture(scope="module")
def qwen_b4(task_dir, tiny_qwen, tmp_path_factory) -> Run:
    return run_lmms(task_dir, tmp_path_factory, "seqprune", QWEN_ARGS.format(tiny_qwen), 4)


def fastv_tokens(n: int, layers: int, ratio: float, layer: int):
    """FastV as the original code ranks: layers before K see all N image tokens, layer K and later the top
    ``int((1 - R) * N)`` of them."""
    kept = int((1 - ratio) * n)
    return [n if i < layer else kept for i in range(layers)]


def test_pruned_run_logs_expected_tokens_per_layer(llava_run):
    good = [i for i in range(N_ROWS) if i != BROKEN]
    assert sorted(llava_run.stats) == good
    for s in llava_run.stats.values():
        assert s["n_image_tokens"] == 64  # 112 px / patch 14 = 8 x 8, whatever the image's size
        assert s["image_tokens_per_layer"] == fastv_tokens(64, 12, 0.5, 2)
        assert 0 < s["prefill_flops"] < s["prefill_flops_unpruned"] and s["prefill_time_s"] > 0
        assert s["setting"] == "fastv_r0.5_l2" and s["batch_rows"] <= 4
    assert max(s["batch_rows"] for s in llava_run.stats.values()) == 4  # batched, not batch 1 in disguise


def test_failed_sample_is_recorded_and_counted(llava_run):
    assert [f["index"] for f in llava_run.failures] == [BROKEN]
    assert "unreadable test image" in llava_run.failures[0]["reason"]
    assert f"{TASK} doc {BROKEN} failed" in llava_run.proc.stdout
    assert "[seqprune] row failed:" in llava_run.predictions[BROKEN]
    entry = llava_run.results[TASK]
    assert (entry["samples"], entry["failed_rows"], entry["metric"]) == (N_ROWS, 1, "exact_match")
    assert entry["problem"].startswith("failed rows")


def test_results_summary_is_lmms_evals_metric(llava_run, task_dir):
    # the metric lmms-eval computed, re-derived from its own logged predictions and the dataset's answers
    answers = datasets.Dataset.from_parquet(str(task_dir / "test.parquet"))["answer"]
    expect = sum(llava_run.predictions[i].strip().lower() == answers[i].lower() for i in range(N_ROWS)) / N_ROWS
    assert llava_run.results[TASK]["value"] == pytest.approx(expect)
    assert 0 < expect < 1  # the trained checkpoint answers some (not all: half its tokens pruned, crops)


def test_collect_results_tables_the_lmms_eval_run(llava_run):
    from scripts.collect_results import build_table

    rows, cols = build_table([llava_run.out])  # lmms-eval's own folder beside ours is no run of ours: skipped
    assert cols == [TASK] and len(rows) == 1
    row = rows[0]
    assert (row["model"], row["method"], row["setting"]) == ("llava_seqprune", "fastv", "fastv_r0.5_l2")
    assert row[TASK] == "failed rows" and row["failed rows"] == 1  # the broken row is counted, not hidden
    assert row["avg image tokens/layer"] == pytest.approx(sum(fastv_tokens(64, 12, 0.5, 2)) / 12)


def test_setting_record_has_fingerprints(llava_run):
    rec = llava_run.setting
    assert rec["model_name"] == llava_run.dir.name == "llava_seqprune_fastv_r0.5_l2"
    assert rec["content"]["checkpoint"]["kind"] == "directory"
    assert any(k.endswith("model.safetensors") for k in rec["content"]["checkpoint"]["files"])
    assert any(k.endswith("lmms_eval/model.py") for k in rec["content"]["code"]["files"])
    assert rec["identity"]["prune"]["method"] == "fastv" and rec["launches"][0]["datasets"] == [TASK]
    assert rec["launches"][0]["vlmeval_args"]["lmms_eval_version"].startswith("0.7")


def test_batch_4_equals_batch_1_llava(llava_b1, llava_run):
    one, four = llava_b1, llava_run
    assert one.predictions == four.predictions and len(set(one.predictions.values())) > 2  # real, varied answers
    assert one.sample_stats() == four.sample_stats()
    assert len({s["seq_len"] for s in four.stats.values()}) > 1  # rows of several lengths: padding in the batches


def test_qwen_rows_of_three_image_token_counts(qwen_b1):
    assert {s["n_image_tokens"] for s in qwen_b1.stats.values()} == {16, 8, 24}
    for s in qwen_b1.stats.values():
        assert s["image_tokens_per_layer"] == fastv_tokens(s["n_image_tokens"], 2, 0.5, 1)
        assert s["batch_rows"] == 1
    assert qwen_b1.dir.name == "qwen2vl_seqprune_fastv_r0.5_l1"


def test_batch_4_mixing_image_token_counts_equals_batch_1_qwen(qwen_b1, qwen_b4):
    assert qwen_b1.predictions == qwen_b4.predictions
    assert qwen_b1.sample_stats() == qwen_b4.sample_stats()  # each row's own counts, FLOPs and length
    stats = list(qwen_b4.stats.values())
    most_of_one_count = max(sum(1 for t in stats if t["n_image_tokens"] == s["n_image_tokens"]) for s in stats)
    assert max(s["batch_rows"] for s in stats) > most_of_one_count  # so some batch held several counts


def test_unknown_model_arg_fails_before_loading(tmp_path, capsys):
    from lmms_eval.models import get_model

    from SequentialPrune.frontends.lmms_eval.model_args import KEYS

    cls = get_model("seqprune_llava")  # through the entry point
    with pytest.raises(SystemExit) as e:  # not an exception: lmms-eval would log it and exit 0
        cls.create_from_arg_string(f"pretrained={tmp_path / 'absent'},prune_ratio=0.5,prune_ratoi=0.7",
                                   {"batch_size": 2, "device": "cpu"})
    assert e.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("[seqprune] error: unknown model_args key(s) ['prune_ratoi']; known keys:")
    assert len(line.splitlines()) == 1 and all(k in line for k in KEYS)
    assert not list(tmp_path.iterdir())  # nothing made, nothing read: the absent checkpoint was never opened


def test_a_model_that_cannot_load_stops_the_command(tmp_path, capsys):
    import shutil

    from lmms_eval.models import get_model

    ckpt = tmp_path / "no-weights"
    ckpt.mkdir()
    shutil.copy(LLAVA / "config.json", ckpt / "config.json")  # a checkpoint's config, and nothing else
    with pytest.raises(SystemExit) as e:  # lmms-eval would log the exception and exit 0
        get_model("seqprune").create_from_arg_string(f"pretrained={ckpt},work_dir={tmp_path / 'work'}",
                                                     {"batch_size": 1})
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "[seqprune] error: llava_seqprune_sequential" in err and "could not be loaded" in err


def test_another_setting_in_the_run_folder_is_refused(llava_run, tmp_path, capsys):
    import shutil

    from lmms_eval.models import get_model

    shutil.copytree(llava_run.dir, tmp_path / llava_run.dir.name)
    cls = get_model("seqprune_llava")
    for _ in range(2):  # the refused launch leaves no lock behind: the second is refused for the same reason
        with pytest.raises(SystemExit):
            cls.create_from_arg_string(f"{LLAVA_ARGS},max_new_tokens=3,work_dir={tmp_path}", {"batch_size": 1})
        err = capsys.readouterr().err
        assert "holds results of another setting (max_new_tokens: 2048 -> 3)" in err, err


def test_every_family_has_an_lmms_eval_model():
    from importlib.metadata import entry_points

    from SequentialPrune.evaluation.catalog import FAMILIES, MODELS
    from SequentialPrune.frontends.lmms_eval import manifest, model

    assert manifest.MODEL_TYPES == tuple(model.BASE_BY_MODEL_TYPE)  # the manifest names the classes model.py makes
    assert sorted(model.BASE_BY_MODEL_TYPE) == sorted(t for types in FAMILIES.values() for t in types)
    for mt, base in model.BASE_BY_MODEL_TYPE.items():
        assert mt in FAMILIES[MODELS[base].family]
    eps = [ep for ep in entry_points(group="lmms_eval.models") if ep.value.startswith("SequentialPrune.")]
    ids = {m.model_id for ep in eps for m in ep.load()()}
    assert ids == set(manifest.names()) == set(model.CLASSES)


def test_model_args_map_onto_the_pruning_setting():
    from SequentialPrune.frontends.lmms_eval.model_args import ModelArgsError, parse_model_args

    # lmms-eval splits model_args at commas: lists use '|', several options ';'
    setting, own = parse_model_args({"prune_method": "pdrop", "prune_option": "stages=2|8|16",
                                     "system_prompt": "none", "pretrained": "org/name"})
    assert dict(setting.prune.options)["stages"] == (2, 8, 16) and setting.model_path == "org/name"
    assert setting.protocol == "hf" and own["system_prompt"] == ""
    setting, _ = parse_model_args({"prune_method": "dart", "prune_option": "image_pivots=3;text_pivots=2"})
    assert dict(setting.prune.options) == {"image_pivots": 3, "text_pivots": 2}
    for bad, says in (({"prune_layer": 1.5}, "prune_layer"), ({"protocol": "paper"}, "protocol"),
                      ({"prune_method": "none", "prune_ratio": 0.5}, "no effect"),
                      ({"prune_ratio": 0.5, "prune_budget": 0.3}, "not both")):
        with pytest.raises(ModelArgsError, match=says):
            parse_model_args(bad)


def test_model_args_prune_before_makes_a_combination():
    from SequentialPrune import PruneConfig
    from SequentialPrune.frontends.lmms_eval.model_args import KEYS, ModelArgsError, parse_model_args

    setting, _ = parse_model_args({"prune_method": "sequential", "prune_ratio": 0.75, "prune_layer": 2,
                                   "prune_before": "visionzip", "prune_before_ratio": 0.666})
    assert setting.prune == PruneConfig("sequential", 0.75, 2, before=PruneConfig("visionzip", 0.666))
    assert setting.prune.tag() == "visionzip_r0.666_l0+sequential_r0.75_l2_s10"
    setting, _ = parse_model_args({"prune_before": "dart", "prune_before_option": "image_pivots=2;text_pivots=3"})
    before = setting.prune.before
    assert (before.method, before.layer, before.options_dict["image_pivots"], before.options_dict["text_pivots"]) \
        == ("dart", 0, 2, 3)
    setting, _ = parse_model_args({"prune_budget": 64, "prune_before": "visionzip"})
    assert setting.budget == 64 and setting.prune.before == PruneConfig("visionzip")
    assert {"prune_before", "prune_before_ratio", "prune_before_option"} <= set(KEYS)
    for bad, says in (({"prune_before_ratio": 0.5}, "add prune_before=METHOD"),
                      ({"prune_before_ratio": "half"}, "add prune_before=METHOD"),  # refused as such, not parsed
                      ({"prune_before_option": "contextual_ratio=0.2"}, "add prune_before=METHOD"),
                      ({"prune_method": "none", "prune_before": "visionzip"}, "give prune_method=visionzip"),
                      ({"prune_before": "fastv"}, r"prune_before='fastv': expected one of"),
                      ({"prune_before": "visionzip", "prune_before_ratio": 1.5}, r"prune_before_ratio must be in"),
                      ({"prune_before": "visionzip", "prune_before_option": "pivots=2"}, r"unknown option\(s\)"),
                      ({"prune_before": "visionzip", "prune_before_option": "pivots=2"},
                       r"set options with prune_before_option=KEY=VALUE;KEY=VALUE"),
                      ({"prune_before": "visionzip",
                        "prune_before_option": "contextual_ratio=0.1;contextual_ratio=0.2"},
                       "prune_before_option repeats the key"),
                      ({"prune_before": "visionzip", "prune_method": "divprune"}, "prune_layer >= 1")):
        with pytest.raises(ModelArgsError, match=says):
            parse_model_args(bad)


def test_likelihood_scoring_picks_what_generation_answers(llava_b1, task_dir):
    """The multiple-choice twin of the task: each possible answer scored by lmms-eval's loglikelihood requests.
    Scored as generation would produce it, the best-scored choice is the generated answer wherever that answer is
    a choice, and every request logs the pruned context's stats."""
    rows = datasets.Dataset.from_parquet(str(task_dir / "test.parquet"))
    samples = next(llava_b1.out.glob(f"*/*_samples_{MC_TASK}.jsonl")).read_text().splitlines()
    losses = {r["doc_id"]: [float(c[0]) for c in r["filtered_resps"]] for r in map(json.loads, samples)}
    assert sorted(losses) == list(range(N_ROWS)) and all(v == float("inf") for v in losses[BROKEN])
    picked = {d: rows[d]["choices"][min(range(len(v)), key=v.__getitem__)] for d, v in losses.items() if d != BROKEN}
    compared = [d for d in picked if llava_b1.predictions[d] in rows[d]["choices"]]
    assert len(compared) >= N_ROWS - 2 and all(picked[d] == llava_b1.predictions[d] for d in compared)
    acc = sum(picked[d] == rows[d]["choices"][rows[d]["target"]] for d in picked) / N_ROWS
    assert llava_b1.results[MC_TASK]["metric"] == "acc" and llava_b1.results[MC_TASK]["value"] == pytest.approx(acc)
    stats = llava_b1.dir / "seqprune_stats" / f"{MC_TASK}.rank0.jsonl"
    lines = [json.loads(x) for x in stats.read_text().splitlines()]
    assert sorted((s["index"], s["continuation_index"]) for s in lines) == \
        [(d, c) for d in range(N_ROWS) if d != BROKEN for c in range(4)]
    assert all(s["image_tokens_per_layer"] == fastv_tokens(64, 12, 0.5, 2) and s["prefill_calls"] == 1 for s in lines)
    failed = (llava_b1.dir / "seqprune_failures" / f"{MC_TASK}.rank0.jsonl").read_text().splitlines()
    assert len(failed) == 4 and all(json.loads(f)["index"] == BROKEN for f in failed)


def test_data_parallel_answers_each_sample_once(task_dir, tmp_path_factory, llava_b1):
    """Two processes (torchrun; lmms-eval shards the documents and pads the shorter rank with a copy): the
    batch-1 answers, one stats line per document (none for the padding copy), the failed row counted once."""
    two = run_lmms(task_dir, tmp_path_factory, "seqprune_llava", LLAVA_ARGS, 2, nproc=2)
    assert two.predictions == llava_b1.predictions
    assert two.sample_stats() == llava_b1.sample_stats()  # Run refuses a document logged twice
    ranks = sorted(f.name for f in (two.dir / "seqprune_stats").glob(f"{TASK}.rank*.jsonl"))
    assert ranks == [f"{TASK}.rank0.jsonl", f"{TASK}.rank1.jsonl"]  # both processes answered
    assert [f["index"] for f in two.failures] == [BROKEN]
    assert (two.results[TASK]["samples"], two.results[TASK]["failed_rows"]) == (N_ROWS, 1)
