"""Work survives interruptions: resumes after a killed run or torchrun, a changed process count, a second
launch of a running setting, a killed torchrun launcher, a run that dies mid-way. Interrupts are real signals
to real processes."""
from __future__ import annotations

import os
import signal
import time

from eval_helpers import Background, children, count_lines, launch, pid_gone, wait_until
from run_rig import LONG, RUN, TOKENS, assert_one_line_per_sample, rank_pickle_entries, results_of

from scripts import collect_results as cr


def test_one_stats_line_per_sample_after_a_killed_run_resumes(rig, tmp_path):
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


def test_one_stats_line_per_sample_after_a_killed_torchrun_resumes(rig, tmp_path):
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


def test_partial_files_of_a_2process_run_are_taken_over_by_1_process(rig, tmp_path):
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


def test_second_launch_of_a_running_setting_is_refused(rig, tmp_path):
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


def test_workers_stop_when_the_torchrun_launcher_is_killed(rig, tmp_path):
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


def test_results_of_finished_datasets_survive_a_run_that_dies_later(rig, tmp_path):
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


def test_collect_results_refuses_a_missing_work_dir(tmp_path, capsys):
    typo = tmp_path / "outputs" / "no_such_run"
    assert cr.main([str(typo)]) == 2
    assert f"no such work dir: {typo}" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cr.main([str(empty)]) == 1 and list(empty.iterdir()) == []


