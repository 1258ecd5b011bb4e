"""The built wheel holds the whole library, carries its one version, and imports and prunes outside the source tree
(a non-editable install, as `pip install .` gives)."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import SequentialPrune
from paths import REPO
from SequentialPrune import PruneConfig
from tiny_models import TOKENS

SUPPORT = REPO / "tests" / "support"  # tiny_models, for the model the unpacked wheel prunes


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy, so no build/ or egg-info lands in the checkout; no build isolation, so no network.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "SequentialPrune", src / "SequentialPrune", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                        "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (whl,) = out.glob("*.whl")
    return whl


def test_the_wheel_holds_every_module_of_the_source_tree(wheel):
    source = {p.relative_to(REPO).as_posix() for p in (REPO / "SequentialPrune").rglob("*.py")
              if "__pycache__" not in p.parts}
    assert {"SequentialPrune/methods/sequential.py", "SequentialPrune/scorers/base.py",
            "SequentialPrune/adapters/llava.py", "SequentialPrune/testing/oracle.py"} <= source
    packed = set(zipfile.ZipFile(wheel).namelist())
    assert source - packed == set(), "modules missing from the wheel"


def test_one_version_everywhere(wheel):
    from importlib.metadata import version

    assert wheel.name.startswith(f"sequentialprune-{SequentialPrune.__version__}-")
    assert version("SequentialPrune") == SequentialPrune.__version__  # the installed metadata


def test_the_installed_wheel_imports_and_prunes(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys\n"
        "import SequentialPrune, torch\n"
        f"assert SequentialPrune.__file__.startswith({str(site)!r}), SequentialPrune.__file__\n"
        "from SequentialPrune import PruneConfig, apply_pruning\n"
        "from tiny_models import build_model, make_inputs\n"
        # the references are for checks only: importing the library (and building a model) leaves them out
        "assert 'SequentialPrune.testing' not in sys.modules, sorted(m for m in sys.modules if 'testing' in m)\n"
        "torch.set_num_threads(1)\n"
        "model = build_model('llava')\n"
        "with torch.no_grad(), apply_pruning(model, PruneConfig('sequential', 0.5, 2)) as pruner:\n"
        "    model(**make_inputs('llava'))\n"
        "from SequentialPrune.testing.oracle import masked_reference  # the references ship too\n"
        "print(pruner.stats.image_tokens_per_layer)\n")
    # the unpacked wheel first on the path, the tests' tiny-model builder after it; run outside the checkout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(SUPPORT)]), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    expected = PruneConfig("sequential", 0.5, 2).tokens_per_layer(TOKENS["llava"], 12)
    assert expected[-1] < expected[0] and p.stdout.strip().splitlines()[-1] == str(expected)
