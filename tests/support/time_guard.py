"""The per-test time guard: a phase of a test (setup, call or teardown) over the limit fails it, naming it.

CI sets CI=true, which turns it on at 60 s, so a change that makes one test slow is noticed where the suite's
time budget is kept (the 2-core VM); SEQPRUNE_TEST_TIME_LIMIT sets another limit anywhere (0: off).
"""
import os

import pytest

def time_limit_s() -> float:
    """The limit in seconds, 0 for none: SEQPRUNE_TEST_TIME_LIMIT, else 60 under CI (CI=true), else none."""
    return float(os.environ.get("SEQPRUNE_TEST_TIME_LIMIT") or (60 if os.environ.get("CI") else 0))


# The allow-list: (phase, fixture or test function) -> why. The one-off builds of shared fixtures (charged to
# the first test that asks for them) and the one test that is a whole multi-process demo.
SLOW_ALLOWED = {
    ("setup", "grid"): "the end-to-end grid: 10 run.py launches (3 through 2-process torchrun), read by ~50 tests",
    ("setup", "demo"): "eval/VLMEvalKit/demo_tiny.sh as a user runs it: 7 run.py launches and the table",
    ("call", "test_demo_grid_runs_from_any_directory"):
        "demo_multigpu_llava.sh as a user runs it: two 2-process torchrun launches and the table (~30 s alone, "
        "up to 60 s beside the other test worker)",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    limit = time_limit_s()
    if not limit or not rep.passed or rep.duration <= limit:
        return
    names = [getattr(item, "originalname", item.name), *getattr(item, "fixturenames", ())]
    if any((rep.when, n) in SLOW_ALLOWED for n in names):
        return
    rep.outcome = "failed"
    rep.longrepr = (f"{item.nodeid}: its {rep.when} took {rep.duration:.1f} s, over the {limit:g} s "
                    "per-test limit (SEQPRUNE_TEST_TIME_LIMIT). Make it cheaper (a smaller model, fewer launches, "
                    "a shared fixture) or, for a one-off shared build, add it to SLOW_ALLOWED in "
                    "tests/support/time_guard.py with the reason.")
