"""The pruning picture: one panel per pruning layer, for LLaVA and Qwen2-VL checkpoints, offline."""
import pytest
from PIL import Image, ImageDraw

from scripts.tiny_checkpoints import build_tiny_llava, build_tiny_qwen2vl
from scripts.visualize_pruning import main
from SequentialPrune import PruneConfig


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    im = Image.new("RGB", (300, 200), (240, 240, 240))
    d = ImageDraw.Draw(im)
    d.ellipse((20, 20, 120, 120), fill=(220, 30, 30))
    d.rectangle((170, 60, 280, 180), fill=(30, 30, 220))
    im.save(path)
    return path


@pytest.mark.parametrize("family,method,ratio", [("llava", "sequential", 0.75), ("qwen2vl", "fastv", 0.5),
                                                 ("qwen2vl", "random", 0.5), ("llava", "dart", 0.5)])
def test_visualizer_draws_one_panel_per_pruning_layer(tmp_path, picture, family, method, ratio):
    build = build_tiny_llava if family == "llava" else build_tiny_qwen2vl
    ckpt = build(tmp_path / family)
    out = tmp_path / "v.png"
    assert main(["--model-path", str(ckpt), "--image", str(picture), "--question", "What colour is the circle?",
                 "--method", method, "--ratio", str(ratio), "--layer", "2", "--out", str(out),
                 "--max-new-tokens", "3"]) == 0
    png = Image.open(out)
    expected = len(PruneConfig(method, ratio, 2).plan(64))
    assert png.info["Description"].startswith(f"panels={expected} ")
    assert png.size[0] > 300 and png.size[1] > 200


@pytest.mark.parametrize("method,options,panels", [("pdrop", ["stages=2,5,8"], 3), ("divprune", [], 1),
                                                   ("spatial", [], 1), ("custom", ["schedule=1:0.6,4:0.3"], 2)])
def test_visualizer_takes_every_method_with_its_options(tmp_path, picture, method, options, panels):
    ckpt = build_tiny_llava(tmp_path / "llava")
    out = tmp_path / "v.png"
    args = ["--model-path", str(ckpt), "--image", str(picture), "--question", "q", "--method", method,
            "--out", str(out), "--max-new-tokens", "2"] + [x for o in options for x in ("--option", o)]
    assert main(args) == 0
    assert Image.open(out).info["Description"].startswith(f"panels={panels} ")


def test_visualizer_rejects_bad_flags(tmp_path, picture, capsys):
    with pytest.raises(SystemExit):
        main(["--model-path", "unused", "--image", str(picture), "--question", "q", "--ratio", "1.5"])
    assert "ratio must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-path", "unused", "--image", str(picture), "--question", "q", "--method", "dart",
              "--option", "stages=2"])
    assert "unknown option(s) ['stages']" in capsys.readouterr().err
