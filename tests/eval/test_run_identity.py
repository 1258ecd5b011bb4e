"""A run folder never serves stale results: the checkpoint, code, TSV and image-cache fingerprints, and the
recorded effective Qwen image size, end to end through eval/VLMEvalKit/run.py on tiny offline checkpoints."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from eval_helpers import EVAL_DIR, REPO, launch, stats_lines
from run_rig import RUN, SMALL, md5, setting_of


def test_checkpoint_weights_changed_in_place_are_refused(rig, tmp_path):
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


def test_large_weight_files_are_identified_by_size_mtime_and_header(tmp_path, monkeypatch):
    """Above SEQPRUNE_HASH_WEIGHTS_UP_TO, a rewrite with the same size is still seen (mtime), a new layout too."""
    import torch
    from safetensors.torch import save_file

    from SequentialPrune.evaluation.run_folder import fingerprint

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


def test_code_change_is_refused(rig, tmp_path):
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
    with open(code / "SequentialPrune" / "evaluation" / "protocols" / "paper_llava.py", "a") as f:
        f.write("\n# a commit that changes the prompt code\n")

    res = launch(args, env, run_py=run_py)
    assert res.rc == 2, str(res)
    assert f"code digest {digest} -> " in res.out, str(res)
    assert "SequentialPrune/evaluation/protocols/paper_llava.py" in res.out, str(res)
    assert "Infer " not in res.out


def _hub_snapshot(cache: Path, repo_id: str, revision: str, source: Path) -> Path:
    """``source``'s files as revision ``revision`` of ``repo_id`` in a Hugging Face cache, made ``refs/main``:
    what a download leaves behind (plain files instead of links to blobs)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_hub_id_is_identified_by_its_cached_revision(rig, tmp_path):
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


def test_regenerated_tsv_is_refused_then_accepted_on_request(rig, tmp_path):
    lmu = rig.own_lmudata(tmp_path / "LMUData")
    env = rig.env_for(lmu)
    work = tmp_path / "work"
    args = rig.args(rig.llava, ["Small_MCQ"], work)
    assert launch(args, env).rc == 0
    tsv = lmu / "Small_MCQ.tsv"
    old = md5(tsv)
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny" / "lmudata.py"), "--root", str(lmu), "--n",
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


def test_dumped_image_cache_follows_the_tsv(rig, tmp_path):
    import numpy as np
    from PIL import Image

    lmu = rig.own_lmudata(tmp_path / "LMUData")
    env = rig.env_for(lmu)
    assert launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work_a"), env).rc == 0
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny" / "lmudata.py"), "--root", str(lmu), "--n",
                    str(SMALL), "--prefix", "Small", "--seed", "7"], check=True, capture_output=True, env=env)
    tsv = pd.read_csv(lmu / "Small_MCQ.tsv", sep="\t")
    folder = lmu / "images" / "Small_MCQ"

    def matching() -> int:
        """Files that are this TSV's images as the paper's model read them: re-encoded as JPEG."""
        n = 0
        for idx, b64 in zip(tsv["index"], tsv["image"]):
            buf = io.BytesIO()
            Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").save(buf, format="JPEG")
            want = np.asarray(Image.open(buf))
            got = np.asarray(Image.open(folder / "seqprune-paper-jpeg" / f"{idx}.jpg").convert("RGB"))
            n += int(want.shape == got.shape and (want == got).all())
        return n

    assert matching() < SMALL  # the cache now holds images of the old TSV
    res = launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work_b"), env)
    assert res.rc == 0, str(res)
    assert f"{folder}: {SMALL} cached image file(s) were extracted from another version of Small_MCQ.tsv" in res.out
    assert matching() == SMALL


def test_qwen_max_pixels_above_the_processor_is_recorded_as_effective(rig, tmp_path):
    work = tmp_path / "work"
    # the hf protocol: VLMEvalKit's own pixel bounds (the paper protocol has its own, see test_paper_inputs.py)
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


@pytest.mark.parametrize("text", ['{"model_name": "llava_seqpr', '["not", "a", "record"]', '{"identity": 3}'])
def test_a_setting_record_cut_short_or_edited_by_hand_is_refused(tmp_path, text):
    from SequentialPrune.evaluation.run_folder import identity as idm

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / idm.SETTING_FILE).write_text(text)
    for check in (lambda: idm.check_not_stale(run_dir, {"model": "x"}),
                  lambda: idm.content_changes(run_dir, {}, {}, True),
                  lambda: idm.write_setting(run_dir, "x", {}, {}, [], {}, 1, [])):
        with pytest.raises(RuntimeError, match="is not a setting record .*move that folder away"):
            check()
    assert (run_dir / idm.SETTING_FILE).read_text() == text  # never overwritten


def test_the_code_fingerprint_covers_the_library_the_core_and_its_own_front_end():
    from SequentialPrune.evaluation.run_folder.fingerprint import code_fingerprint

    every = set(code_fingerprint()["files"])
    ours = set(code_fingerprint("vlmevalkit")["files"])
    others = {f for f in every if f.startswith("SequentialPrune/frontends/") and f.count("/") > 2
              and not f.startswith("SequentialPrune/frontends/vlmevalkit/")}
    assert {"SequentialPrune/engine.py", "SequentialPrune/evaluation/rows.py",
            "SequentialPrune/frontends/vlmevalkit/launch.py"} <= ours
    assert ours == every - others and not any("/testing/" in f for f in every)
