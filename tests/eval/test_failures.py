"""Never silently wrong, and faults stay small: all-empty answers, a mistyped $LMUData, bad rows that fail
alone, a read-only or full disk (one clear line, no truncated record), end to end on tiny checkpoints."""
from __future__ import annotations

import base64
import errno
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from eval_helpers import (
    COMBINATION_FAILED,
    EVAL_DIR,
    REPO,
    Background,
    Launch,
    count_lines,
    launch,
    predictions,
    wait_until,
)
from run_rig import LONG, RUN, SMALL, assert_one_line_per_sample, error_lines, results_of

from scripts import collect_results as cr


def test_all_empty_answers_fail_the_run_and_are_counted(rig, tmp_path):
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


def test_missing_or_unset_lmudata_is_an_error(rig, tmp_path):
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


def _png_b64(colour) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (112, 112), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_rows_fail_alone_with_index_and_reason(rig, tmp_path):
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
    yn.loc[1, "image"] = base64.b64encode(buf.getvalue()).decode()               # CMYK JPEG: answered, as by the
    # original (the paper protocol saves it as JPEG, the hf one converts it to RGB; tests/eval/test_paper_images.py)
    yn.loc[4, "question"] = ""
    yn.loc[2, "image"] = "/data/images/cat.jpg"  # a file path, and a short junk cell: VLMEvalKit reads either as
    yn.loc[3, "image"] = "xyz"                   # another row's index and would stop the whole dataset loading
    yn.loc[5, "image"] = str(yn.loc[0, "index"])  # a real reference to row 0's image: fine
    yn.to_csv(lmu / "Small_YN.tsv", sep="\t", index=False)
    work = tmp_path / "work"

    res = launch(rig.args(rig.llava, ["Small_MCQ", "Small_YN"], work), rig.env_for(lmu))
    assert res.rc == 1, str(res)
    assert COMBINATION_FAILED not in res.out
    assert f"FAILED ROWS: {RUN} x Small_MCQ: failed rows: 3 of {SMALL} rows failed" in res.out, str(res)
    assert f"FAILED ROWS: {RUN} x Small_YN: failed rows: 3 of {SMALL} rows failed" in res.out
    assert "Small_YN.tsv: 2 row(s) (2, 3) will fail alone" in res.out  # said at launch
    assert f"50.00% (3/{SMALL})" in res.out  # VLMEvalKit's own infer_fail_rate counts them
    logged = {}
    for f in (work / RUN / "seqprune_failures").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            logged[(rec["dataset"], rec["index"])] = rec["reason"]
    assert set(logged) == {("Small_MCQ", 1), ("Small_MCQ", 2), ("Small_MCQ", 3), ("Small_YN", 2), ("Small_YN", 3),
                           ("Small_YN", 4)}
    assert "'/data/images/cat.jpg' is neither base64" in logged[("Small_YN", 2)] and "'xyz'" in logged[("Small_YN", 3)]
    assert "truncated" in logged[("Small_MCQ", 1)] and "cannot identify image" in logged[("Small_MCQ", 2)]
    assert "empty question" in logged[("Small_MCQ", 3)] and "empty question" in logged[("Small_YN", 4)]
    for ds, bad in (("Small_MCQ", {1, 2, 3}), ("Small_YN", {2, 3, 4})):
        pred = predictions(work / RUN, ds)
        failed = {i for i, p in zip(pred["index"], pred["prediction"]) if str(p).startswith("Failed to obtain")}
        assert failed == bad and len(pred) == SMALL  # the other rows ran
        assert results_of(work / RUN)[ds]["failed_rows"] == len(bad)
    (row,), _ = cr.build_table([work])
    assert row["Small_MCQ"] == row["Small_YN"] == "failed rows" and row["failed rows"] == 6


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


def test_read_only_work_dir_is_one_clear_line(rig, tmp_path):
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


def test_full_disk_mid_run_is_one_clear_line_and_no_truncated_record(rig, tmp_path):
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




def test_duplicated_indices_are_refused_at_launch(rig, tmp_path):
    lmu = rig.own_lmudata(tmp_path / "LMUData")
    mcq = pd.read_csv(lmu / "Small_MCQ.tsv", sep="\t")
    mcq.loc[1, "index"] = mcq.loc[0, "index"]
    mcq.to_csv(lmu / "Small_MCQ.tsv", sep="\t", index=False)
    res = launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work"), rig.env_for(lmu))
    assert res.rc == 2, str(res)
    assert f"several rows share the index {mcq.loc[0, 'index']}" in res.out and "own index" in res.out
    assert "Infer " not in res.out and not (tmp_path / "work").exists()


def test_a_prediction_file_cut_by_a_kill_is_set_aside_and_its_rows_generated_again(rig, tmp_path):
    """What a SIGKILL mid-write left before writes were atomic: a 0-byte table, a cut rank pickle. Each is
    named, set aside, and its rows are generated again; the rerun ends as a clean run does."""
    work = tmp_path / "work"
    args = rig.args(rig.llava, ["Small_MCQ"], work)
    assert launch(args, rig.env).rc == 0
    pred = predictions(work / RUN, "Small_MCQ")
    table = work / RUN / f"{RUN}_Small_MCQ.xlsx"
    table.write_bytes(b"")
    res = launch(args, rig.env)
    assert res.rc == 0, str(res)
    assert f"{table} cannot be read (0 bytes" in res.out and "set aside as" in res.out
    assert predictions(work / RUN, "Small_MCQ").equals(pred)
    assert_one_line_per_sample(work / RUN, rig.lmudata, "Small_MCQ")
    table.unlink()
    cut = work / RUN / "01_Small_MCQ.pkl"
    cut.write_bytes(pickle.dumps({i: "A" for i in range(SMALL)})[:20])
    res = launch(args, rig.env)
    assert res.rc == 0, str(res)
    assert f"{cut} cannot be read (20 bytes" in res.out
    assert predictions(work / RUN, "Small_MCQ").equals(pred)
    assert list((work / RUN).glob("*.broken-*")) and not list((work / RUN).glob("*seqprune-tmp*"))


def test_prediction_writes_are_whole_or_not_at_all(tmp_path):
    """VLMEvalKit's dump through the hook: a write that dies half-way leaves the previous file as it was."""
    import vlmeval.inference as vinf
    from vlmeval.smp import dump, load

    from SequentialPrune.frontends.vlmevalkit.hooks import atomic_dump

    class Killed:
        def __reduce__(self):
            raise KeyboardInterrupt("killed mid-write")

    path = tmp_path / "01_Bench.pkl"
    dump({0: "A"}, str(path))
    with pytest.raises(KeyboardInterrupt):
        atomic_dump(dump)({0: "A", 1: "B", 2: Killed()}, str(path))
    assert load(str(path)) == {0: "A"} and [p.name for p in tmp_path.iterdir()] == ["01_Bench.pkl"]
    with pytest.raises(KeyboardInterrupt):  # VLMEvalKit's own dump: the half-written file is all that is left
        dump({0: "A", 1: "B", 2: Killed()}, str(path))
    with pytest.raises(Exception):
        load(str(path))
    import vlmeval.run as vrun

    from SequentialPrune.frontends.vlmevalkit import hooks

    hooks.install(vrun, lambda *a: None)  # what run.py does before VLMEvalKit's loop
    assert getattr(vinf.dump, "_seqprune_atomic", False) and atomic_dump(vinf.dump) is vinf.dump


def test_a_work_dir_that_is_a_file_is_one_clear_line(rig, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    for work in (blocker, blocker / "below"):
        res = launch(rig.args(rig.llava, ["Small_MCQ"], work), rig.env)
        assert res.rc == 2 and f"{blocker} is a file, not a folder" in res.out, str(res)
        assert "Traceback" not in res.out


def test_answers_are_checked_at_launch(rig, tmp_path):
    """A missing answer column is refused before inference (not found after every row ran); lower-case MCQ
    answers, which VLMEvalKit scores 0 silently, are warned about."""
    lmu = rig.own_lmudata(tmp_path / "LMUData")
    mcq = pd.read_csv(lmu / "Small_MCQ.tsv", sep="\t")
    mcq.drop(columns=["answer"]).to_csv(lmu / "Small_MCQ.tsv", sep="\t", index=False)
    res = launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work"), rig.env_for(lmu))
    assert res.rc == 2 and "has no answer column" in res.out and "Infer " not in res.out, str(res)
    mcq.assign(answer=mcq["answer"].str.lower()).to_csv(lmu / "Small_MCQ.tsv", sep="\t", index=False)
    res = launch(rig.args(rig.llava, ["Small_MCQ"], tmp_path / "work"), rig.env_for(lmu))
    assert res.rc == 0 and "are not option letters" in res.out, str(res)


def test_image_cells_follow_vlmevalkits_reference_rule():
    """A cell of at most 64 characters names another row, which must hold image data (longer than 64)."""
    from SequentialPrune.frontends.vlmevalkit.image_cells import unusable_cells

    data = "iVBORw0KGgo" + "A" * 80
    bad = unusable_cells([0, 1, 2, 3, 4, 5], [data, "0", "1", "img/a.png", float("nan"), "A" * 65])
    assert set(bad) == {"2", "3"}  # "1" names a row that is itself a reference; a path names no row
    assert "'img/a.png' is neither base64" in bad["3"]
