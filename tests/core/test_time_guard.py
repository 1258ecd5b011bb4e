"""The per-test time guard (tests/support/time_guard.py) in an inner pytest run: a slow phase fails, named; the
allow-listed shared builds pass."""
import pytest

CONFTEST = "from time_guard import pytest_runtest_makereport  # noqa: F401\n"
INNER = '''
import time
import pytest

@pytest.fixture(scope="module")
def grid():
    time.sleep(0.6)  # an allow-listed one-off build

@pytest.fixture
def other():
    time.sleep(0.6)

def test_fast():
    pass

def test_slow_call():
    time.sleep(0.6)

def test_slow_unlisted_setup(other):
    pass

def test_slow_listed_setup(grid):
    pass

def test_demo_grid_runs_from_any_directory():
    time.sleep(0.6)  # an allow-listed test
'''


@pytest.mark.parametrize("limit", ["0.3", "0"])
def test_a_slow_phase_fails_naming_the_test_unless_allowed(pytester, monkeypatch, limit):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=INNER)
    with monkeypatch.context() as env:  # the limit for the inner run only, not for this test's own phases
        env.setenv("SEQPRUNE_TEST_TIME_LIMIT", limit)
        res = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    out = res.stdout.str()
    if limit == "0":  # off: everything passes
        res.assert_outcomes(passed=5)
        return
    res.assert_outcomes(passed=3, failed=1, errors=1)
    assert "test_slow_call: its call took" in out and "over the 0.3 s per-test limit" in out
    assert "test_slow_unlisted_setup: its setup took" in out
    summary = out.split("short test summary")[-1]
    assert "test_slow_listed_setup" not in summary and "test_demo_grid_runs_from_any_directory" not in summary
