"""What scored each dataset: VLMEvalKit's silent fallback to exact matching when the judge does not answer."""
import pytest
from run_rig import results_of

from scripts.tiny import lmudata as syn
from SequentialPrune.frontends.vlmevalkit import judges
from SequentialPrune.frontends.vlmevalkit.results import write_dataset_results


class _DeadJudge:
    """A judge whose API does not answer, as VLMEvalKit's ``build_judge`` returns with no network."""

    def working(self):
        return False


@pytest.fixture
def mcq(tmp_path, monkeypatch):
    """A real VLMEvalKit MCQ dataset and a prediction file in a run folder (half the answers right)."""
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    paths = syn.write_synthetic_benchmarks(tmp_path / "lmu", n=6)
    from vlmeval.dataset import ImageMCQDataset, build_dataset

    monkeypatch.setattr(ImageMCQDataset, "DATASET_URL", dict(ImageMCQDataset.DATASET_URL))
    syn.register_synthetic_datasets(paths)
    name = syn.synthetic_dataset_names()["MCQ"]
    ds = build_dataset(name)
    data = ds.data.drop(columns="image")
    data["prediction"] = [a if i % 2 else "Z" for i, a in enumerate(data["answer"])]
    run_dir = tmp_path / "work" / "tiny" / "T1"
    run_dir.mkdir(parents=True)
    eval_file = run_dir / f"tiny_{name}.xlsx"
    data.to_excel(eval_file, index=False)
    return ds, name, run_dir, eval_file


def test_an_unreachable_judge_is_recorded_as_exact_matching(mcq, monkeypatch, capsys):
    ds, name, run_dir, eval_file = mcq
    import vlmeval.dataset.image_mcq as image_mcq

    monkeypatch.setattr(image_mcq, "build_judge", lambda **kw: _DeadJudge())
    evaluate = judges.recording_judge(ds.evaluate, name)
    with pytest.warns(UserWarning, match="not working properly"):  # VLMEvalKit's own warning still shows
        acc = evaluate(str(eval_file), model="gpt-4o-mini", nproc=1)
    assert float(acc["Overall"].iloc[0]) == pytest.approx(0.5)  # scored, by exact matching: half right
    assert judges.judge_used(run_dir, name) == judges.fallback_label("gpt-4o-mini")
    assert "gpt-4o-mini did not answer" in capsys.readouterr().err
    entry = write_dataset_results(run_dir, "tiny", [name], {})[name]
    assert entry["judge"] == judges.fallback_label("gpt-4o-mini")
    assert results_of(run_dir)[name]["judge"].startswith("exact_matching")


def test_a_later_evaluation_replaces_the_fallback_record(mcq):
    ds, name, run_dir, eval_file = mcq
    judges.record(run_dir, name, judges.fallback_label("gpt-4o-mini"))
    judges.recording_judge(ds.evaluate, name)(str(eval_file), model="exact_matching", nproc=1)
    assert judges.judge_used(run_dir, name) == "exact_matching"
    assert judges.judge_used(run_dir, "OtherDataset") is None
