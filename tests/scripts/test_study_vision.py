"""The tiny study's vision-side rows (issue 23) run through the study's own loop on the trained checkpoint
(test_tiny_model.py solves every --all-methods row, these included, at the three papers' budgets)."""
import json

from scripts.tiny import study

VISION = ("fastervlm", "visionzip", "vispruner", "hiprune", "cdpruner")


def test_a_vision_row_runs_through_the_study(tmp_path):
    assert {m for _, m, _ in study.ALL_METHODS} >= set(VISION)
    out = tmp_path / "study.json"
    assert study.main(["--all-methods", "--rows", "visionzip", "--budgets", "0.3333333", "--n", "6", "--batch", "6",
                       "--json", str(out)]) == 0
    none, vz = json.loads(out.read_text())
    assert none["label"] == "none" and none["summary"]["all"]["acc"] == 1.0
    assert vz["label"] == "visionzip K=0 avg=0.333N R=0.656" and vz["summary"]["all"]["n"] == 6
    assert (vz["config"]["method"], vz["config"]["layer"], vz["avg_tokens"]) == ("visionzip", 0, 21.0)  # 21 of 64
