"""Faults a demanding user meets, end to end through eval/VLMEvalKit/run.py on tiny offline checkpoints.

One test per case of issue 10: results never stale (checkpoint, code, TSV and
image cache changes), never silently wrong (empty answers, a mistyped
$LMUData), and work survives faults (bad rows, resumes, concurrent launches, a
killed torchrun launcher, a changed process count, a run that dies mid-way, a
read-only or full disk), plus the effective Qwen image size. Interrupts are
real signals to real processes. Checkpoints and datasets are built once per
module; each test has its own work dir.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pandas as pd
import pytest

from eval_helpers import (COMBINATION_FAILED, EVAL_DIR, REPO, Background, Launch, children, count_lines, launch,
                          pid_gone, predictions, stats_lines, subprocess_env, tsv_indices, wait_until)

sys.path.append(str(EVAL_DIR))  # after the repo paths: our module names are generic

from scripts import collect_results as cr  # noqa: E402
from scripts.synthetic_lmudata import write_synthetic_benchmarks  # noqa: E402
from scripts.tiny_checkpoints import build_tiny_llava, build_tiny_qwen2vl  # noqa: E402

SMALL, LONG = 6, 30          # rows of the Small_* and Long_* datasets
TOKENS = 16                  # the slow checkpoint's answer length where a test stops a run mid-way (~0.1 s a sample)
RUN = "llava_seqprune_sequential_r0.75_l2_s10"  # the run folder of the default setting
KINDS = {"_MCQ": "mcq", "_YN": "yn", "_GQA": "vqa"}


@dataclass
class Rig:
    root: Path
    llava: Path       # answers one letter, then stops
    empty: Path       # answers nothing (EOS first)
    slow: Path        # never emits its EOS: generates up to --max-new-tokens
    qwen: Path
    lmudata: Path
    env: Dict[str, str]

    def args(self, ckpt: Path, data: List[str], work_dir: Path, *flags: str, max_new_tokens: int = 4) -> List[str]:
        reg = [x for p in ("Small", "Long") for suffix, kind in KINDS.items()
               for x in ("--register-dataset", f"{p}{suffix}={kind}")]
        return ["--data", *data, "--model", "qwen2vl_seqprune" if ckpt == self.qwen else "llava_seqprune",
                "--model-path", str(ckpt), "--work-dir", str(work_dir), "--max-new-tokens", str(max_new_tokens),
                *reg, *flags]

    def own_lmudata(self, dest: Path) -> Path:
        """A private copy of the TSVs (no dumped images), for tests that change the data."""
        dest.mkdir(parents=True)
        for tsv in self.lmudata.glob("*.tsv"):
            shutil.copy2(tsv, dest / tsv.name)
        return dest

    def env_for(self, lmudata: Path) -> Dict[str, str]:
        return dict(self.env, LMUData=str(lmudata))


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    root = tmp_path_factory.mktemp("robustness")
    llava = build_tiny_llava(root / "llava", num_layers=12)
    empty = build_tiny_llava(root / "llava-empty", num_layers=12, answer_letter="</s>")  # EOS is the "answer"
    slow = root / "llava-slow"
    shutil.copytree(llava, slow)
    gen = json.loads((slow / "generation_config.json").read_text())
    gen["eos_token_id"] = gen["pad_token_id"]  # its real EOS no longer stops generation
    (slow / "generation_config.json").write_text(json.dumps(gen))
    qwen = build_tiny_qwen2vl(root / "qwen", num_layers=12)
    lmudata = root / "LMUData"
    write_synthetic_benchmarks(lmudata, n=SMALL, prefix="Small")
    write_synthetic_benchmarks(lmudata, n=LONG, prefix="Long", seed=2000)
    return Rig(root, Path(llava), Path(empty), slow, Path(qwen), lmudata, subprocess_env(lmudata))


def setting_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "seqprune_setting.json").read_text())


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "seqprune_results.json").read_text())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def error_lines(out: str) -> List[str]:
    return [x for x in out.splitlines() if "cannot write" in x]


def assert_one_line_per_sample(run_dir: Path, lmudata: Path, dataset: str) -> List[dict]:
    lines = [r for r in stats_lines(run_dir) if r["dataset"] == dataset]
    assert sorted(str(r["index"]) for r in lines) == sorted(str(i) for i in tsv_indices(lmudata, dataset))
    return lines


def rank_pickle_entries(run_dir: Path, dataset: str) -> int:
    n = 0
    for p in run_dir.glob(f"*_{dataset}.pkl"):
        try:
            n += len(pickle.loads(p.read_bytes()))
        except Exception:  # being written at the moment of the kill
            pass
    return n


# ============================================================================= 1-4: content identity
def test_1_checkpoint_weights_changed_in_place_are_refused(rig, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(rig.llava, ckpt)
    work = tmp_path / "work"
    args = rig.args(ckpt, ["Small_MCQ"], work)
    assert launch(args, rig.env).rc == 0
    pred = work / RUN / f"{RUN}_Small_MCQ.xlsx"
    before = pred.stat().st_mtime_ns
    old_sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    weights = load_file(ckpt / "model.safetensors")
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1.0  # fine-tuned in place: same names, shapes and file size
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    new_sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()

    res = launch(args, rig.env)
    assert res.rc == 2, str(res)
    assert f"checkpoint {ckpt}: model.safetensors: sha256 {old_sha[:12]}" in res.out, str(res)
    assert new_sha[:12] in res.out and "--reuse-despite-changes" in res.out and "another --work-dir" in res.out
    assert "Infer " not in res.out  # refused before any model loads
    assert pred.stat().st_mtime_ns == before


def test_1_large_weight_files_are_identified_by_size_mtime_and_header(tmp_path, monkeypatch):
    """Above SEQPRUNE_HASH_WEIGHTS_UP_TO, a rewrite with the same size is still seen (mtime), a new layout too."""
    import fingerprint
    from safetensors.torch import save_file
    import torch

    monkeypatch.setenv(fingerprint.FULL_HASH_ENV, "100")
    save_file({"w": torch.zeros(64)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    old = fingerprint.checkpoint_fingerprint(str(tmp_path))
    assert "header_sha256" in old["files"]["model.safetensors"] and "sha256" in old["files"]["config.json"]
    time.sleep(0.01)
    save_file({"w": torch.ones(64)}, tmp_path / "model.safetensors")
    changed = fingerprint.checkpoint_changes(old, fingerprint.checkpoint_fingerprint(str(tmp_path)))
    assert len(changed) == 1 and "mtime_ns" in changed[0], changed
    save_file({"w": torch.zeros(32, 2)}, tmp_path / "model.safetensors")
    os.utime(tmp_path / "model.safetensors", ns=(old["files"]["model.safetensors"]["mtime_ns"],) * 2)
    changed = fingerprint.checkpoint_changes(old, fingerprint.checkpoint_fingerprint(str(tmp_path)))
    assert len(changed) == 1 and "header sha256" in changed[0], changed  # same size and mtime, new shapes


def test_2_code_change_is_refused(rig, tmp_path):
    code = tmp_path / "code"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "SequentialPrune", code / "SequentialPrune", ignore=ignore)
    shutil.copytree(EVAL_DIR, code / "eval" / "VLMEvalKit", ignore=ignore)
    run_py = code / "eval" / "VLMEvalKit" / "run.py"
    env = dict(rig.env, PYTHONPATH=str(code))
    work = tmp_path / "work"
    args = rig.args(rig.llava, ["Small_MCQ"], work)
    assert launch(args, env, run_py=run_py).rc == 0
    digest = setting_of(work / RUN)["content"]["code"]["digest"]
    with open(code / "eval" / "VLMEvalKit" / "seqprune_models" / "llava_paper.py", "a") as f:
        f.write("\n# a commit that changes the prompt code\n")

    res = launch(args, env, run_py=run_py)
    assert res.rc == 2, str(res)
    assert f"code digest {digest} -> " in res.out and "eval/VLMEvalKit/seqprune_models/llava_paper.py" in res.out, str(res)
    assert "Infer " not in res.out


def _hub_snapshot(cache: Path, repo_id: str, revision: str, source: Path) -> Path:
    """``source``'s files as revision ``revision`` of ``repo_id`` in a Hugging Face cache, made ``refs/main``:
    what a download leaves behind (plain files instead of links to blobs)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_1_hub_id_is_identified_by_its_cached_revision(rig, tmp_path):
    """A hub id loads the snapshot the cache's refs/main names: a new revision there (a newer download) is
    refused like an edited directory, naming both revisions; the same revision resumes."""
    from safetensors.torch import load_file, save_file

    cache, repo_id = tmp_path / "hub", "seqprune-test/tiny-llava"
    env = dict(rig.env, HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"))
    old_rev, new_rev = "1" * 40, "2" * 40
    _hub_snapshot(cache, repo_id, old_rev, rig.llava)
    work = tmp_path / "work"
    args = [repo_id if a == str(rig.llava) else a for a in rig.args(rig.llava, ["Small_MCQ"], work)]
    assert launch(args, env).rc == 0
    recorded = setting_of(work / RUN)["content"]["checkpoint"]
    assert recorded["kind"] == "hub" and recorded["revision"] == old_rev and "model.safetensors" in recorded["files"]
    again = launch(args, env)  # same revision: its predictions are reused
    assert again.rc == 0 and "Infer " not in again.out and "6 answers" in again.out, str(again)
    pred = work / RUN / f"{RUN}_Small_MCQ.xlsx"
    before = pred.stat().st_mtime_ns

    snap = _hub_snapshot(cache, repo_id, new_rev, rig.llava)
    weights = load_file(snap / "model.safetensors")
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1.0
    save_file(weights, snap / "model.safetensors", metadata={"format": "pt"})
    res = launch(args, env)
    assert res.rc == 2, str(res)
    assert f"{repo_id} revision {old_rev} -> {new_rev}" in res.out and "--reuse-despite-changes" in res.out, str(res)
    assert "Infer " not in res.out and pred.stat().st_mtime_ns == before


def test_3_regenerated_tsv_is_refused_then_accepted_on_request(rig, tmp_path):
    lmu = rig.own_lmudata(tmp_path / "LMUData")
    env = rig.env_for(lmu)
    work = tmp_path / "work"
    args = rig.args(rig.llava, ["Small_MCQ"], work)
    assert launch(args, env).rc == 0
    tsv = lmu / "Small_MCQ.tsv"
    old = md5(tsv)
    subprocess.run([sys.executable, str(REPO / "scripts" / "synthetic_lmudata.py"), "--root", str(lmu), "--n",
                    str(SMALL), "--prefix", "Small", "--seed", "7"], check=True, capture_output=True, env=env)
    new = md5(tsv)
    assert new != old

    res = launch(args, env)
    assert res.rc == 2, str(res)
    assert f"dataset Small_MCQ {tsv}: md5 {old} -> {new}" in res.out, str(res)
    assert "Infer " not in res.out

    accepted = launch(args + ["--reuse-despite-changes"], env)
    assert accepted.rc == 0, accepted
    assert "--reuse-despite-changes: keeping the results" in accepted.out and "Infer " not in accepted.out
    rec = setting_of(work / RUN)
    assert rec["content"]["datasets"]["Small_MCQ"]["md5"] == new
    assert any("Small_MCQ" in c for c in rec["launches"][-1]["accepted_changes"])


def test_4_dumped_image_cache_follows_the_tsv(rig, tmp_path):
    import numpy as np
    from PIL import Image

    lmu = rig.own_lmudata(tmp_path / "LMUData")
    env = rig.env_for(lmu)
    assert launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work_a"), env).rc == 0
    subprocess.run([sys.executable, str(REPO / "scripts" / "synthetic_lmudata.py"), "--root", str(lmu), "--n",
                    str(SMALL), "--prefix", "Small", "--seed", "7"], check=True, capture_output=True, env=env)
    tsv = pd.read_csv(lmu / "Small_MCQ.tsv", sep="\t")
    folder = lmu / "images" / "Small_MCQ"

    def matching() -> int:
        n = 0
        for idx, b64 in zip(tsv["index"], tsv["image"]):
            want = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
            got = np.asarray(Image.open(folder / f"{idx}.png").convert("RGB"))
            n += int(want.shape == got.shape and (want == got).all())
        return n

    assert matching() < SMALL  # the cache now holds images of the old TSV
    res = launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work_b"), env)
    assert res.rc == 0, str(res)
    assert f"{folder}: {SMALL} cached image file(s) were extracted from another version of Small_MCQ.tsv" in res.out
    assert matching() == SMALL


# ============================================================================= 5-6: silently wrong
def test_5_all_empty_answers_fail_the_run_and_are_counted(rig, tmp_path):
    work = tmp_path / "work"
    res = launch(rig.args(rig.empty, ["Small_MCQ", "Small_YN"], work), rig.env)
    assert res.rc == 1, str(res)
    for ds in ("Small_MCQ", "Small_YN"):
        assert f"EMPTY ANSWERS: {RUN} x {ds}: failed: all {SMALL} answers are empty" in res.out, str(res)
        assert f"{RUN} x {ds}:" in res.out and f"{SMALL} answers, {SMALL} empty, 0 failed rows" in res.out
        rec = results_of(work / RUN)[ds]
        assert rec["empty_answers"] == SMALL and rec["samples"] == SMALL and rec["problem"].startswith("failed")
    (row,), _ = cr.build_table([work])
    assert row["Small_MCQ"] == row["Small_YN"] == "failed" and row["empty answers"] == 2 * SMALL
    assert row["Average"] == "incomplete"


def test_6_missing_or_unset_lmudata_is_an_error(rig, tmp_path):
    home = tmp_path / "home"
    (home / "LMUData").mkdir(parents=True)
    shutil.copy2(rig.lmudata / "Small_MCQ.tsv", home / "LMUData")  # a TSV of the same name in the fallback
    work = tmp_path / "work"
    typo = tmp_path / "LMUDta"
    res = launch(rig.args(rig.llava, ["Small_MCQ"], work), dict(rig.env, HOME=str(home), LMUData=str(typo)))
    assert res.rc == 2, str(res)
    assert f"$LMUData={typo} is not a directory" in res.out and "~/LMUData" in res.out
    env = dict(rig.env, HOME=str(home))
    env.pop("LMUData")
    res = launch(rig.args(rig.llava, ["Small_MCQ"], work), env)
    assert res.rc == 2 and "$LMUData is not set" in res.out and "export LMUData=" in res.out, str(res)
    assert not work.exists() and not (home / "LMUData" / "images").exists() and not typo.exists()


# ============================================================================= 7: bad rows
def _png_b64(colour) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (112, 112), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_7_bad_rows_fail_alone_with_index_and_reason(rig, tmp_path):
    from PIL import Image

    lmu = rig.own_lmudata(tmp_path / "LMUData")
    mcq = pd.read_csv(lmu / "Small_MCQ.tsv", sep="\t")
    png = _png_b64((200, 30, 30))
    mcq.loc[1, "image"] = base64.b64encode(png[: len(png) // 2]).decode()        # truncated PNG
    mcq.loc[2, "image"] = base64.b64encode(b"this is not an image " * 8).decode()  # junk base64
    mcq.loc[3, "question"] = ""                                                   # empty question
    mcq.to_csv(lmu / "Small_MCQ.tsv", sep="\t", index=False)
    yn = pd.read_csv(lmu / "Small_YN.tsv", sep="\t")
    buf = io.BytesIO()
    Image.new("CMYK", (112, 112), (0, 128, 255, 0)).save(buf, format="JPEG")
    yn.loc[1, "image"] = base64.b64encode(buf.getvalue()).decode()               # CMYK JPEG
    yn.loc[4, "question"] = ""
    yn.to_csv(lmu / "Small_YN.tsv", sep="\t", index=False)
    work = tmp_path / "work"

    res = launch(rig.args(rig.llava, ["Small_MCQ", "Small_YN"], work), rig.env_for(lmu))
    assert res.rc == 1, str(res)
    assert COMBINATION_FAILED not in res.out
    assert f"FAILED ROWS: {RUN} x Small_MCQ: failed rows: 3 of {SMALL} rows failed" in res.out, str(res)
    assert f"FAILED ROWS: {RUN} x Small_YN: failed rows: 2 of {SMALL} rows failed" in res.out
    assert f"50.00% (3/{SMALL})" in res.out  # VLMEvalKit's own infer_fail_rate counts them
    logged = {}
    for f in (work / RUN / "seqprune_failures").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            logged[(rec["dataset"], rec["index"])] = rec["reason"]
    assert set(logged) == {("Small_MCQ", 1), ("Small_MCQ", 2), ("Small_MCQ", 3), ("Small_YN", 1), ("Small_YN", 4)}
    assert "truncated" in logged[("Small_MCQ", 1)] and "cannot identify image" in logged[("Small_MCQ", 2)]
    assert "empty question" in logged[("Small_MCQ", 3)] and "empty question" in logged[("Small_YN", 4)]
    assert "CMYK" in logged[("Small_YN", 1)]
    for ds, bad in (("Small_MCQ", {1, 2, 3}), ("Small_YN", {1, 4})):
        pred = predictions(work / RUN, ds)
        failed = {i for i, p in zip(pred["index"], pred["prediction"]) if str(p).startswith("Failed to obtain")}
        assert failed == bad and len(pred) == SMALL  # the other rows ran
        assert results_of(work / RUN)[ds]["failed_rows"] == len(bad)
    (row,), _ = cr.build_table([work])
    assert row["Small_MCQ"] == row["Small_YN"] == "failed rows" and row["failed rows"] == 5


# ============================================================================= 8, 11: resumes
def test_8_one_stats_line_per_sample_after_a_killed_run_resumes(rig, tmp_path):
    work = tmp_path / "work"
    args = rig.args(rig.slow, ["Long_MCQ"], work, max_new_tokens=TOKENS)
    stats = work / RUN / "seqprune_stats"
    bg = Background(args, rig.env, tmp_path / "first.log")
    wait_until(lambda: count_lines(stats) >= 13, 180, "13 samples generated", bg)  # one checkpoint (10) passed
    bg.signal_group(signal.SIGSTOP)
    logged, saved = count_lines(stats), rank_pickle_entries(work / RUN, "Long_MCQ")
    bg.kill()
    assert logged > saved > 0  # these samples are generated again on resume

    res = launch(args, rig.env)
    assert res.rc == 0, str(res)
    assert f"dropped {logged - saved} per-sample log line(s)" in res.out, str(res)
    assert f"no longer running (PID {bg.pid}" in res.out  # the killed launch's lock was stale
    assert len(assert_one_line_per_sample(work / RUN, rig.lmudata, "Long_MCQ")) == LONG


def test_8_one_stats_line_per_sample_after_a_killed_torchrun_resumes(rig, tmp_path):
    work = tmp_path / "work"
    args = rig.args(rig.slow, ["Long_YN"], work, max_new_tokens=TOKENS)
    run_dir = work / RUN

    def past_checkpoints():
        # each rank past its first checkpoint (10 of its 15 rows) with a sample not saved yet; a fast machine
        # can finish one rank before the other passes 10, so count per rank
        per_rank = [count_lines(run_dir / "seqprune_stats", f"Long_YN.rank{r}.jsonl") for r in (0, 1)]
        return (all((run_dir / f"{r}2_Long_YN.pkl").is_file() for r in (0, 1))
                and min(per_rank) >= 11 and sum(per_rank) < LONG)

    bg = Background(args, rig.env, tmp_path / "first.log", nproc=2)
    wait_until(past_checkpoints, 240, "both ranks past their first checkpoint", bg)
    bg.signal_group(signal.SIGSTOP)
    logged, saved = count_lines(run_dir / "seqprune_stats"), rank_pickle_entries(run_dir, "Long_YN")
    bg.kill()
    assert logged > saved >= 20

    res = launch(args, rig.env, nproc=2)
    assert res.rc == 0, str(res)
    assert f"dropped {logged - saved} per-sample log line(s)" in res.out, str(res)
    lines = assert_one_line_per_sample(run_dir, rig.lmudata, "Long_YN")
    assert len(lines) == LONG and {f.name for f in (run_dir / "seqprune_stats").glob("*")} == \
        {"Long_YN.rank0.jsonl", "Long_YN.rank1.jsonl"}


def test_11_partial_files_of_a_2process_run_are_taken_over_by_1_process(rig, tmp_path):
    work = tmp_path / "work"
    args = rig.args(rig.slow, ["Long_GQA"], work, max_new_tokens=TOKENS)
    run_dir = work / RUN
    bg = Background(args, rig.env, tmp_path / "first.log", nproc=2)
    wait_until(lambda: all((run_dir / f"{r}2_Long_GQA.pkl").is_file() for r in (0, 1)), 240,
               "both ranks' partial prediction files", bg)
    bg.signal_group(signal.SIGSTOP)
    saved = rank_pickle_entries(run_dir, "Long_GQA")
    bg.kill()
    assert 20 <= saved < LONG

    rerun_start = time.time()
    res = launch(args, rig.env, nproc=1)
    assert res.rc == 0, str(res)
    assert (f"Long_GQA: took over {saved} saved prediction(s) from an interrupted run with another process count "
            "(02_Long_GQA.pkl, 12_Long_GQA.pkl)") in res.out, res
    assert not list(run_dir.glob("*.pkl"))  # no orphans left behind
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["seqprune_stats"]
    lines = assert_one_line_per_sample(run_dir, rig.lmudata, "Long_GQA")
    assert sum(r["logged_at"] >= rerun_start for r in lines) == LONG - saved  # the saved ones were not redone


# ============================================================================= 9-10: concurrency
def test_9_second_launch_of_a_running_setting_is_refused(rig, tmp_path):
    work = tmp_path / "work"
    args = rig.args(rig.slow, ["Long_MCQ"], work, max_new_tokens=TOKENS)
    lock = work / RUN / "seqprune.lock"
    first = Background(args, rig.env, tmp_path / "first.log")
    wait_until(lambda: lock.is_file() and count_lines(work / RUN / "seqprune_stats") >= 1, 180,
               "the first launch inferring", first)
    first.signal_group(signal.SIGSTOP)  # keep it mid-run (alive, holding the lock) while the second one starts
    logged = count_lines(work / RUN / "seqprune_stats")
    try:
        second = launch(args, rig.env, nproc=2)
    finally:
        first.signal_group(signal.SIGCONT)
    assert second.rc != 0, second
    # Rank 0 refuses; rank 1 stops by itself too, or is stopped by torchrun when rank 0 exits first.
    assert f"is in use by another launch (PID {first.pid} on" in second.out, second
    assert count_lines(work / RUN / "seqprune_stats") == logged  # the second launch generated nothing
    done = first.wait(240)
    assert done.rc == 0, done
    assert len(assert_one_line_per_sample(work / RUN, rig.lmudata, "Long_MCQ")) == LONG
    assert not lock.exists()


def test_10_workers_stop_when_the_torchrun_launcher_is_killed(rig, tmp_path):
    work = tmp_path / "work"
    # The slow checkpoint needs ~2 s per sample at 300 tokens: without the watchdog the workers would go on for ~30 s.
    args = rig.args(rig.slow, ["Long_MCQ"], work, max_new_tokens=300)
    bg = Background(args, rig.env, tmp_path / "torchrun.log", nproc=2)
    wait_until(lambda: count_lines(work / RUN / "seqprune_stats") >= 1, 240, "the workers generating", bg)
    workers = children(bg.pid)
    assert len(workers) == 2, workers
    os.kill(bg.pid, signal.SIGKILL)  # the launcher only
    t0 = time.time()
    wait_until(lambda: all(pid_gone(w) for w in workers), 15, "the workers to exit")
    assert time.time() - t0 < 15
    out = bg.wait(30).out
    assert f"the torchrun launcher (PID {bg.pid}) is gone; stopping this worker" in out, out[-3000:]
    assert not (work / RUN / f"{RUN}_Long_MCQ.xlsx").exists()  # the run did not go on to completion
    assert count_lines(work / RUN / "seqprune_stats") < LONG


# ============================================================================= 12: the table
def test_12_results_of_finished_datasets_survive_a_run_that_dies_later(rig, tmp_path):
    work = tmp_path / "work"
    run_dir = work / RUN
    bg = Background(rig.args(rig.slow, ["Small_MCQ", "Long_YN"], work, max_new_tokens=TOKENS), rig.env,
                    tmp_path / "run.log")

    def second_started():
        res = (run_dir / "seqprune_results.json").is_file() and results_of(run_dir)
        return res and "Small_MCQ" in res and count_lines(run_dir / "seqprune_stats", "Long_YN.*") >= 1

    wait_until(second_started, 180, "the first dataset scored and the second one inferring", bg)
    bg.signal_group(signal.SIGSTOP)
    bg.kill()
    value = results_of(run_dir)["Small_MCQ"]["value"]
    assert isinstance(value, float)
    (row,), _ = cr.build_table([work])
    assert row["Small_MCQ"] == value and row["Long_YN"] == "partial" and row["status"] == "partial"


def test_12_collect_results_refuses_a_missing_work_dir(tmp_path, capsys):
    typo = tmp_path / "outputs" / "no_such_run"
    assert cr.main([str(typo)]) == 2
    assert f"no such work dir: {typo}" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cr.main([str(empty)]) == 1 and list(empty.iterdir()) == []


# ============================================================================= 13: disk faults
@contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (root with CAP_SYS_ADMIN); yields False if it cannot be mounted.

    ``SEQPRUNE_TEST_NO_MOUNT=1`` pretends mounting is impossible, to exercise the fallbacks.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SEQPRUNE_TEST_NO_MOUNT") == "1":
        yield False
        return
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    try:
        yield p.returncode == 0
    finally:
        if p.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> Path:
    """Write into ``folder`` until its file system is full; return the ballast file."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return ballast


def test_13_read_only_work_dir_is_one_clear_line(rig, tmp_path):
    ro = tmp_path / "ro"
    with tmpfs(ro, "ro,size=1m") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without CAP_SYS_ADMIN: neither a read-only mount nor permissions can stop a write")
            ro.chmod(0o555)  # not root: permissions make the folder unwritable
        res = launch(rig.args(rig.llava, ["Small_MCQ"], ro / "work"), rig.env)
    assert res.rc == 2, str(res)
    lines = error_lines(res.out)
    assert len(lines) == 1 and str(ro / "work") in lines[0], str(res)
    assert ("Read-only file system" if mounted else "Permission denied") in lines[0]
    assert "choose a writable --work-dir" in lines[0] and "Traceback" not in res.out


def test_13_full_disk_mid_run_is_one_clear_line_and_no_truncated_record(rig, tmp_path):
    """On a 4 MB tmpfs filled while the run is stopped (SIGSTOP); without mount rights, RLIMIT_FSIZE (EFBIG)."""
    disk = tmp_path / "disk"
    work = disk / "work"
    args = rig.args(rig.llava, ["Long_MCQ"], work)
    stats = work / RUN / "seqprune_stats"
    with tmpfs(disk, "size=4m") as mounted:
        if mounted:
            bg = Background(args, rig.env, tmp_path / "run.log")
            wait_until(lambda: count_lines(stats) >= 3, 180, "3 samples generated", bg)
            bg.signal_group(signal.SIGSTOP)
            ballast = _fill(disk)
            bg.signal_group(signal.SIGCONT)
            res = bg.wait(180)
            reason = "No space left on device"
        else:
            def limit():  # every file of the run may grow to 16 kB; the stats file outgrows that mid-run
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (16000, 16000))
            p = subprocess.run([sys.executable, str(EVAL_DIR / "run.py"), *args], env=rig.env, cwd=str(REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit,
                               timeout=300)
            res, ballast, reason = Launch(p.returncode, p.stdout, 0.0), None, "File too large"
        assert res.rc == 3, res.out[-4000:]
        lines = error_lines(res.out)
        assert len(lines) == 1 and str(work) in lines[0] and reason in lines[0], res.out[-4000:]
        assert "rerun the same command" in lines[0] and "Traceback" not in res.out
        for f in stats.glob("*.jsonl"):  # every record whole
            text = f.read_text()
            assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())
        if ballast is not None:
            ballast.unlink()
        again = launch(args, rig.env)  # space again: the same command resumes
        assert again.rc == 0, str(again)
        assert len(assert_one_line_per_sample(work / RUN, rig.lmudata, "Long_MCQ")) == LONG


# ============================================================================= 14: Qwen image size
def test_14_qwen_max_pixels_above_the_processor_is_recorded_as_effective(rig, tmp_path):
    work = tmp_path / "work"
    # the hf protocol: VLMEvalKit's own pixel bounds (the paper protocol has its own, see test_protocol.py)
    res = launch(rig.args(rig.qwen, ["Small_MCQ"], work, "--max-pixels", "2000000", "--protocol", "hf"), rig.env)
    assert res.rc == 0, str(res)
    assert ("--max-pixels 2000000 is above what the checkpoint's image processor allows (max_pixels 1003520); "
            "images are resized to at most 1003520 pixels") in res.out, res
    run_dir = work / "qwen2vl_seqprune_sequential_r0.75_l2_s10"
    rec = setting_of(run_dir)
    assert rec["effective"]["max_pixels"] == 1003520 and rec["effective"]["requested_max_pixels"] == 2000000
    assert rec["identity"]["max_pixels"] == 2000000  # what was asked for stays part of the identity
    tokens = {r["n_image_tokens"] for r in stats_lines(run_dir)}
    # VLMEvalKit's min_pixels (1003520) upsizes the 112 px images; the processor then caps them at 980 x 980.
    assert tokens == {1225} and 1225 * 28 * 28 <= rec["effective"]["max_pixels"]
