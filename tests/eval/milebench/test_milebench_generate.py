"""End to end, offline: eval/MileBench/generate.py on the tiny LLaVA checkpoint and a synthetic MileBench-format set
(2-4 images per sample) with the original's pruning flags: pred.json records, image tokens per layer across
several images, exactly-once resume, a bad sample failing alone with its id, the timing log, a stale setting
refused, and --dump-inputs."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from eval_helpers import REPO
from PIL import Image

CKPT = REPO / "checkpoints" / "tiny-shapes-llava"
N_TOK = 64  # (112 // 14) ** 2 image tokens per image
LAYERS = 12
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def make_benchmark(root):
    """Two sets: multiple choice (sample 2's first image missing, sample 3's second one corrupt) and open-ended."""
    rng = np.random.default_rng(0)
    sets = {"SynthMCQ": ("multi-choice", []), "SynthOpen": ("open-ended", [])}
    for name, (_, data) in sets.items():
        (root / name / "images").mkdir(parents=True)
        for sid in range(4 if name == "SynthMCQ" else 2):
            n = ([2, 4, 2, 3] if name == "SynthMCQ" else [3, 4])[sid]  # grouped by count: MCQ runs 0, 2, 1, 3
            files = []
            for k in range(n):
                colour = list(COLOURS)[int(rng.integers(4))]
                f = f"{sid}_{k}.png"
                Image.new("RGB", (90 + 7 * k, 112), COLOURS[colour]).save(root / name / "images" / f)
                files.append(f)
            ctx = " ".join(f"{{image#{k + 1}}}" for k in range(n)) + " which image is red?"
            inst = {"context": ctx, "images_path": files}
            if name == "SynthMCQ":
                inst["choice_list"] = [f"image {k + 1}" for k in range(n)]
            data.append({"sample_id": sid, "task_instruction_id": 0, "task_instance": inst,
                         "response": "image 1", "image_quantity_level": "Few"})
    for name, (qtype, data) in sets.items():
        (root / name / f"{name}.json").write_text(json.dumps(
            {"meta_data": {"task_instruction": ["Look at the shapes."], "question_type": qtype}, "data": data}))
    (root / "SynthMCQ" / "images" / "2_0.png").unlink()  # the bad samples
    good = (root / "SynthMCQ" / "images" / "3_1.png").read_bytes()
    (root / "SynthMCQ" / "images" / "3_1.png").write_bytes(good[:40])
    return {name: [(d["sample_id"], len(d["task_instance"]["images_path"])) for d in data]
            for name, (_, data) in sets.items()}


PRUNE = ["--use-fast-v", "--fast-v-sequential-prune", "--fast-v-agg-layer", "2", "--fast-v-attention-rank", "0.5",
         "--prune-step", "10", "--fast-v-inplace", "--fast-v-sys-length", "35", "--fast-v-image-token-length", "576"]


def argv(root, out, *extra):
    return ["--data_dir", str(root), "--dataset_name", "SynthMCQ", "SynthOpen", "--model_name", "llava-v1.5-7b",
            "--model-path", str(CKPT), "--output_dir", str(out), "--max-new-tokens", "4", *PRUNE, *extra]


def stats(run_dir, ds):
    return [json.loads(x) for f in sorted((run_dir / "seqprune_stats").glob(f"{ds}.rank*.jsonl"))
            for x in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    from SequentialPrune.frontends.milebench.generate import main

    root = tmp_path_factory.mktemp("milebench")
    samples = make_benchmark(root / "data")
    out = root / "outputs"
    rc = main(argv(root / "data", out))
    runs = [p for p in out.iterdir() if p.is_dir()]
    return root, samples, out, runs, rc


def test_predictions_stats_and_a_bad_sample(first_run):
    root, samples, out, runs, rc = first_run
    assert rc == 1  # a failed sample
    assert len(runs) == 1 and runs[0].name.startswith("llava_seqprune_")  # one folder per setting
    run = runs[0]
    for ds, ids in samples.items():
        preds = json.loads((run / ds / "pred.json").read_text())
        groups = {}  # the original's order: samples grouped by image count, groups by their first sample
        for i, n in ids:
            groups.setdefault(n, []).append(i)
        assert [p["sample_id"] for p in preds] == [i for g in groups.values() for i in g]
        for p in preds:
            assert set(p) >= {"sample_id", "image", "question", "gt_response", "gen_model_id", "pred_response",
                              "gen_kwargs"}
        good = [p for p in preds if "[seqprune] row failed" not in p["pred_response"]]
        for p in good:
            assert p["question"].startswith("Look at the shapes.\n") and p["question"].count("<ImageHere>") == \
                len(p["image"]) == dict(ids)[p["sample_id"]]
            assert p["gen_kwargs"]["max_new_tokens"] == 4 and p["gen_kwargs"]["min_new_tokens"] == 1
        lines = stats(run, ds)
        assert sorted(x["index"] for x in lines) == sorted(p["sample_id"] for p in good)
        for x in lines:  # image tokens per layer across all the sample's images
            n = dict(ids)[x["index"]] * N_TOK
            per_layer = x["image_tokens_per_layer"]
            assert x["n_image_tokens"] == n and len(per_layer) == LAYERS
            assert per_layer[:2] == [n, n] and per_layer[2] < n and per_layer[-1] == round(n * 0.5)
            assert per_layer == sorted(per_layer, reverse=True) and x["prefill_flops"] < x["prefill_flops_unpruned"]
            assert x["prefill_calls"] >= 1  # --use-fast-v: no KV cache, the original's recompute
        assert json.loads((run / ds / "eval.json").read_text())
    bad = {p["sample_id"]: p["pred_response"] for p in json.loads((run / "SynthMCQ" / "pred.json").read_text())}
    assert "[MileBench] [seqprune] row failed: index 2:" in bad[2] and "2_0.png" in bad[2]  # missing
    assert "[MileBench] [seqprune] row failed: index 3:" in bad[3] and "3_1.png" in bad[3]  # corrupt
    failures = [json.loads(x) for x in (run / "seqprune_failures" / "SynthMCQ.rank0.jsonl").read_text().splitlines()]
    assert [f["index"] for f in failures] == [2, 3]
    results = json.loads((run / "seqprune_results.json").read_text())
    assert results["SynthMCQ"]["failed_rows"] == 2 and results["SynthOpen"]["failed_rows"] == 0
    assert results["SynthMCQ"]["metric"] == "Accuracy" and results["SynthOpen"]["metric"] == "Rouge-L f"
    assert set(results["SynthMCQ"]["image_quantity_levels"]) == {"Few", "Medium", "Many"}
    rows = list(csv.reader(open(out / "execution_times.csv")))
    assert rows[0] == ["name", "Elapsed Time (seconds)"] and len(rows) == 3 and float(rows[1][1]) > 0
    assert not (out / "result.csv").exists()  # score.py's tables, over the settings it is given, are its own
    from SequentialPrune.frontends.milebench.summary import rows as summary_rows

    (row,) = summary_rows(out)  # the one table over settings, efficiency columns from the stats
    assert row["setting"] == run.name and row["samples"] == 4 and row["prefill FLOPs ratio"] < 1
    assert row["SynthMCQ failed"] == 2 and row["avg image tokens/layer"] < row["image tokens"]
    setting = json.loads((run / "seqprune_setting.json").read_text())
    assert setting["identity"]["milebench_max_new_tokens"] == 4 and setting["identity"]["max_context_len"] == 4096


TIMING = ("prefill_time_s", "batch_prefill_time_s", "generate_time_s", "batch_rows", "batch_peak_memory_bytes",
          "peak_memory_bytes", "logged_at", "prefill_calls")


def per_sample(lines):
    return {x["index"]: {k: v for k, v in x.items() if k not in TIMING} for x in lines}


def test_batch_size_4_gives_batch_1s_answers_and_stats(first_run):
    """--batch-size 4: samples of 2, 3 and 4 images in one generate call, each pruned by its own schedule; the
    same answers and per-sample records as one at a time, the bad samples failing alone."""
    from SequentialPrune.frontends.milebench.generate import main

    root, samples, out, runs, _ = first_run
    out4 = root / "outputs_b4"
    assert main(argv(root / "data", out4, "--batch-size", "4")) == 1
    (run4,) = [p for p in out4.iterdir() if p.is_dir()]
    for ds in samples:
        preds = {p["sample_id"]: p["pred_response"] for p in json.loads((runs[0] / ds / "pred.json").read_text())}
        preds4 = {p["sample_id"]: p["pred_response"] for p in json.loads((run4 / ds / "pred.json").read_text())}
        assert preds4 == preds
        lines4 = stats(run4, ds)
        assert per_sample(lines4) == per_sample(stats(runs[0], ds))
    assert max(x["batch_rows"] for x in stats(run4, "SynthOpen")) == 2  # both open-ended samples in one call
    assert len({x["n_image_tokens"] for x in stats(run4, "SynthOpen")}) == 2  # of 3 and 4 images


def test_resume_retries_only_the_failed_and_unsaved_samples(first_run):
    from SequentialPrune.frontends.milebench.generate import main, partial_file

    root, samples, out, runs, _ = first_run
    run = runs[0]
    for f in ("2_0.png", "3_1.png"):
        Image.new("RGB", (100, 112), (220, 30, 30)).save(root / "data" / "SynthMCQ" / "images" / f)
    before = {ds: json.loads((run / ds / "pred.json").read_text()) for ds in samples}
    # an interruption of SynthOpen after its first sample: only that one saved, a stale log line of the second
    kept = before["SynthOpen"][0]
    (run / "SynthOpen" / "pred.json").unlink()
    partial_file(run / "SynthOpen", 0).write_text(json.dumps(kept) + "\n")
    with open(run / "seqprune_stats" / "SynthOpen.rank0.jsonl", "a") as f:
        f.write(json.dumps({"index": before["SynthOpen"][1]["sample_id"], "logged_at": 0}) + "\n")
    assert main(argv(root / "data", out)) == 0
    after = {ds: json.loads((run / ds / "pred.json").read_text()) for ds in samples}
    for ds in samples:  # each sample once in pred.json and once in the stats
        ids = [p["sample_id"] for p in after[ds]]
        assert sorted(ids) == sorted(i for i, _ in samples[ds])
        assert sorted(x["index"] for x in stats(run, ds)) == sorted(ids)
    assert [p for p in after["SynthMCQ"] if p["sample_id"] < 2] == [p for p in before["SynthMCQ"]
                                                                    if p["sample_id"] < 2]
    assert after["SynthOpen"][0] == kept
    assert "row failed" not in json.dumps(after)
    assert not list((run / "SynthOpen").glob("pred.partial*"))
    rows = list(csv.reader(open(out / "execution_times.csv")))
    assert len(rows) == 5  # one row per dataset that generated, per launch


def test_stale_setting_refused_and_dump_inputs(first_run, tmp_path):
    from SequentialPrune.frontends.milebench.generate import main

    root, samples, out, runs, _ = first_run
    p = subprocess.run([sys.executable, str(REPO / "eval" / "MileBench" / "generate.py"),
                        *argv(root / "data", out)[:-2], "--max-new-tokens", "5"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 2 and "holds results of another setting" in p.stderr, p.stderr[-2000:]
    dump = tmp_path / "inputs.jsonl"
    assert main(argv(root / "data", tmp_path / "o", "--dump-inputs", str(dump))) == 0
    recs = [json.loads(x) for x in dump.read_text().splitlines()]
    assert len(recs) == 6 and not (tmp_path / "o").exists()  # no model, no run folder
    for r in recs:
        n = dict(samples[r["dataset"]])[r["sample_id"]]
        assert r["prompt"].startswith("[INST] <<SYS>>\n") and r["prompt"].count("<image>") == n == len(r["images"])
        assert r["image_tokens"] == n * N_TOK and len(r["input_ids"]) == r["image_positions"][-1][1] + \
            len(r["input_ids"][r["image_positions"][-1][1]:])


def test_sigint_then_resume_generates_each_sample_once(tmp_path):
    """A real interruption: SIGINT mid-run exits 130 with the answers so far kept; the rerun answers the rest."""
    import signal
    import time

    from SequentialPrune.frontends.milebench.generate import main, partial_file

    data, out, n = tmp_path / "data", tmp_path / "out", 40
    (data / "SynthMany" / "images").mkdir(parents=True)
    anns = []
    for sid in range(n):
        for k in range(2):
            Image.new("RGB", (112, 100), list(COLOURS.values())[(sid + k) % 4]).save(
                data / "SynthMany" / "images" / f"{sid}_{k}.png")
        anns.append({"sample_id": sid, "task_instruction_id": 0, "response": "red", "image_quantity_level": "Few",
                     "task_instance": {"context": "{image#1} {image#2} what colour?",
                                       "images_path": [f"{sid}_0.png", f"{sid}_1.png"]}})
    (data / "SynthMany" / "SynthMany.json").write_text(json.dumps(
        {"meta_data": {"task_instruction": ["Look."], "question_type": "open-ended"}, "data": anns}))
    args = ["--data_dir", str(data), "--dataset_name", "SynthMany", "--model_name", "llava_seqprune",
            "--model-path", str(CKPT), "--output_dir", str(out), "--max-new-tokens", "4", "--prune-method", "none"]
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "eval" / "MileBench" / "generate.py"), *args], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    partial = partial_file(out / "llava_seqprune_none" / "SynthMany", 0)
    deadline = time.time() + 120
    while not (partial.is_file() and len(partial.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, (tmp_path / "log.txt").read_text()[-3000:]
    log.close()
    assert "rerun the same command to resume" in (tmp_path / "log.txt").read_text()
    saved = len(partial.read_text().splitlines())
    assert 2 <= saved < n
    t0 = time.time()
    assert main(args) == 0
    run = out / "llava_seqprune_none"
    preds = json.loads((run / "SynthMany" / "pred.json").read_text())
    assert [p["sample_id"] for p in preds] == list(range(n))
    lines = stats(run, "SynthMany")
    assert sorted(x["index"] for x in lines) == list(range(n))  # one stats line per sample
    assert sum(x["logged_at"] >= t0 for x in lines) == n - saved  # the rerun answered only the rest


def test_torchrun_data_parallel_answers_each_sample_once(tmp_path):
    """torchrun with 2 CPU processes (gloo): every sample answered by one rank, merged by rank 0; a rerun in one
    process finds them all saved."""
    from SequentialPrune.frontends.milebench.generate import main
    from SequentialPrune.frontends.milebench.synthetic import write_benchmark

    write_benchmark(tmp_path / "data", n=6)
    args = ["--data_dir", str(tmp_path / "data"), "--dataset_name", "SynthShapesOpen", "--model_name",
            "llava_seqprune", "--model-path", str(CKPT), "--output_dir", str(tmp_path / "out"), "--max-new-tokens", "4",
            "--prune-method", "sequential", "--prune-ratio", "0.5", "--prune-layer", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(REPO / "eval" / "MileBench" / "generate.py"), *args],
                       capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    preds = json.loads((run / "SynthShapesOpen" / "pred.json").read_text())
    assert sorted(x["sample_id"] for x in preds) == list(range(6))
    per_rank = {f.name: [json.loads(x)["index"] for x in f.read_text().splitlines()]
                for f in (run / "seqprune_stats").glob("SynthShapesOpen.rank*.jsonl")}
    assert set(per_rank) == {"SynthShapesOpen.rank0.jsonl", "SynthShapesOpen.rank1.jsonl"}
    assert sorted(i for v in per_rank.values() for i in v) == list(range(6)) and all(per_rank.values())
    assert json.loads((run / "seqprune_setting.json").read_text())["launches"][-1]["world_size"] == 2
    assert main(args) == 0  # one process now: nothing left to generate
    assert sum(len(v) for v in per_rank.values()) == len(stats(run, "SynthShapesOpen"))


def test_a_sample_whose_prompt_cannot_be_built_keeps_its_answer_key(tmp_path):
    """Its pred.json record carries the annotation's response (scoring reads it), not None."""
    from SequentialPrune.frontends.milebench.flags import parse
    from SequentialPrune.frontends.milebench.generate import sample_builders
    from transformers import AutoTokenizer

    make_benchmark(tmp_path / "data")
    ann = json.loads((tmp_path / "data" / "SynthOpen" / "SynthOpen.json").read_text())
    ann["data"][1]["task_instruction_id"] = 7  # no such instruction: this sample's prompt cannot be built
    (tmp_path / "data" / "SynthOpen" / "SynthOpen.json").write_text(json.dumps(ann))
    args, _ = parse(argv(tmp_path / "data", tmp_path / "out"))
    builders = dict(sample_builders(args, "SynthOpen", AutoTokenizer.from_pretrained(CKPT)))
    with pytest.raises(IndexError):
        builders[1]()
    assert builders[1].response == "image 1" and builders[0]().response == "image 1"


def test_a_vision_side_method_at_an_equal_budget(tmp_path):
    """VisionZip (issue 23: dominant tokens plus merged contextual ones, before the decoder) through the whole
    front end at --prune-budget 1/3 of N: each multi-image sample is reduced once, before layer 0, by the
    solved one-shot schedule of its own N, and answered."""
    from SequentialPrune import PruneConfig
    from SequentialPrune.frontends.milebench.generate import main

    samples = make_benchmark(tmp_path / "data")
    out = tmp_path / "out"
    rc = main(["--data_dir", str(tmp_path / "data"), "--dataset_name", "SynthOpen", "--model_name", "llava-v1.5-7b",
               "--model-path", str(CKPT), "--output_dir", str(out), "--max-new-tokens", "2",
               "--prune-method", "visionzip", "--prune-budget", "0.3333333"])
    assert rc == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    cfg = PruneConfig.for_budget("visionzip", 0.3333333 * N_TOK, N_TOK, LAYERS)  # N: the checkpoint's 64
    assert run.name == f"llava_seqprune_{cfg.tag()}" and cfg.layer == 0
    preds = json.loads((run / "SynthOpen" / "pred.json").read_text())
    assert sorted(p["sample_id"] for p in preds) == [sid for sid, _ in samples["SynthOpen"]]
    lines = stats(run, "SynthOpen")
    assert sorted(s["index"] for s in lines) == [0, 1]
    for s in lines:
        n = s["n_image_tokens"]
        assert n in (3 * N_TOK, 4 * N_TOK) and s["image_tokens_per_layer"] == cfg.tokens_per_layer(n, LAYERS)
        assert len(set(s["image_tokens_per_layer"])) == 1 and s["image_tokens_per_layer"][0] < n / 2


@pytest.mark.parametrize("model_type, base", [("qwen2_vl", "qwen2vl_seqprune"), ("qwen3_vl", "qwen3vl_seqprune_2b"),
                                              ("llava_onevision", "llava_onevision_seqprune"),
                                              ("internvl", "internvl_seqprune")])
def test_every_family_runs_multi_image_samples_pruned(tmp_path, model_type, base):
    """The other families on their hf chat templates: every sample answered once (the two bad ones failed
    alone), each pruned over all of its images' tokens together, by the schedule of that sample's own N."""
    from scripts.tiny.families import BY_MODEL_TYPE
    from SequentialPrune import PruneConfig
    from SequentialPrune.frontends.milebench.generate import main

    ckpt = BY_MODEL_TYPE[model_type](tmp_path / "ckpt", num_layers=4)
    samples = make_benchmark(tmp_path / "data")
    out = tmp_path / "out"
    rc = main(["--data_dir", str(tmp_path / "data"), "--dataset_name", "SynthMCQ", "SynthOpen", "--model_name", base,
               "--model-path", str(ckpt), "--output_dir", str(out), "--max-new-tokens", "2",
               "--prune-method", "fastv", "--prune-ratio", "0.5", "--prune-layer", "1"])
    assert rc == 1  # the missing and the corrupt image
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    cfg = PruneConfig("fastv", 0.5, 1)
    for ds, want in samples.items():
        preds = json.loads((run / ds / "pred.json").read_text())
        assert sorted(p["sample_id"] for p in preds) == sorted(sid for sid, _ in want)
        lines = stats(run, ds)
        good = {sid for sid, _ in want if not (ds == "SynthMCQ" and sid in (2, 3))}
        assert sorted(s["index"] for s in lines) == sorted(good)
        for s in lines:
            n = s["n_image_tokens"]
            assert n > 0 and s["image_tokens_per_layer"] == cfg.tokens_per_layer(n, 4)
        counts = {s["index"]: s["n_image_tokens"] for s in lines}
        by_images = dict(want)
        assert counts[max(good, key=by_images.get)] > counts[min(good, key=by_images.get)]  # more images, more tokens


def test_qwen_batches_of_several_image_sizes_equal_one_at_a_time(tmp_path):
    """Qwen2-VL gives each image its own token count from its size: a --batch-size 4 call mixes samples of
    several counts and answers each as it is answered alone, with its own record."""
    from scripts.tiny.families import BY_MODEL_TYPE
    from SequentialPrune.frontends.milebench.generate import main

    ckpt = BY_MODEL_TYPE["qwen2_vl"](tmp_path / "ckpt", num_layers=4)
    make_benchmark(tmp_path / "data")
    runs = {}
    for batch in ("1", "4"):
        out = tmp_path / f"out{batch}"
        assert main(["--data_dir", str(tmp_path / "data"), "--dataset_name", "SynthMCQ", "SynthOpen", "--model_name",
                     "qwen2vl_seqprune", "--model-path", str(ckpt), "--output_dir", str(out), "--max-new-tokens", "3",
                     "--prune-method", "sequential", "--prune-ratio", "0.5", "--prune-layer", "1",
                     "--prune-step", "20", "--batch-size", batch]) == 1
        (runs[batch],) = [p for p in out.iterdir() if p.is_dir()]
    for ds in ("SynthMCQ", "SynthOpen"):
        one, four = ([(p["sample_id"], p["pred_response"])
                      for p in json.loads((runs[b] / ds / "pred.json").read_text())]
                     for b in ("1", "4"))
        assert one == four
        assert per_sample(stats(runs["1"], ds)) == per_sample(stats(runs["4"], ds))
    lines = stats(runs["4"], "SynthOpen")
    assert max(x["batch_rows"] for x in lines) == 2 and len({x["n_image_tokens"] for x in lines}) == 2
