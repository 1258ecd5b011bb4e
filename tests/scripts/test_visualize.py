"""The pruning picture: one panel per pruning layer, for LLaVA and Qwen2-VL checkpoints, offline."""
import pytest
from PIL import Image, ImageDraw

from scripts.tiny.checkpoints import build_tiny_llava, build_tiny_qwen2vl
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
                                                   ("spatial", [], 1), ("custom", ["schedule=1:0.6,4:0.3"], 2),
                                                   ("visionzip", [], 1)])
def test_visualizer_takes_every_method_with_its_options(tmp_path, picture, method, options, panels):
    ckpt = build_tiny_llava(tmp_path / "llava")
    out = tmp_path / "v.png"
    args = ["--model-path", str(ckpt), "--image", str(picture), "--question", "q", "--method", method,
            "--out", str(out), "--max-new-tokens", "2"] + [x for o in options for x in ("--option", o)]
    assert main(args) == 0
    description = Image.open(out).info["Description"]
    assert description.startswith(f"panels={panels} ")
    # merged tokens are drawn apart: VisionZip keeps 21 of 64, round(21 * 5/32) = 3 contextual tokens, and on
    # LLaVA-1.5 the CLS feature rewrites its image's first free slot; the other methods merge nothing
    assert (" merged=[4] " if method == "visionzip" else f" merged={[0] * panels} ") in description


def test_visualizer_rejects_bad_flags(tmp_path, picture, capsys):
    with pytest.raises(SystemExit):
        main(["--model-path", "unused", "--image", str(picture), "--question", "q", "--ratio", "1.5"])
    assert "ratio must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-path", "unused", "--image", str(picture), "--question", "q", "--method", "dart",
              "--option", "stages=2"])
    assert "unknown option(s) ['stages']" in capsys.readouterr().err
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    for image, words in ((tmp_path / "missing.png", "No such file"), (not_image, "cannot identify image")):
        with pytest.raises(SystemExit):  # before any model loads ("unused" is no checkpoint)
            main(["--model-path", "unused", "--image", str(image), "--question", "q"])
        assert f"--image {image}: " in (err := capsys.readouterr().err) and words in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--model-path", "unused", "--image", str(picture), "--question", "q", "--out",
              str(tmp_path / "no" / "such" / "v.png")])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["llava_onevision", "internvl"])
def test_visualizer_draws_tiled_layouts(tmp_path, picture, family):
    """LLaVA-OneVision (and LLaVA-NeXT): the base image and the stitched tiles, cropped as the model unpads them;
    InternVL: each tile and the thumbnail. Every image token is drawn once, except the tile map's newlines."""
    import numpy as np
    from scripts import visualize_pruning as vp
    from scripts.tiny import families

    build = {"llava_onevision": families.build_tiny_llava_onevision,
             "internvl": families.build_tiny_internvl}[family]
    ckpt = build(tmp_path / family)
    out = tmp_path / "v.png"
    assert main(["--model-path", str(ckpt), "--image", str(picture), "--question", "q", "--method", "sequential",
                 "--ratio", "0.5", "--layer", "2", "--out", str(out), "--max-new-tokens", "2"]) == 0
    processor, model = vp.load(str(ckpt), device="cpu")
    capture = {}
    _, inputs = vp.answer(processor, model, Image.open(picture).convert("RGB"), "q", 1, capture=capture)
    coords = vp.image_token_coords(model, inputs, capture)
    n = int(sum((inputs["input_ids"][0] == t).sum() for t in (model.config.image_token_id,)))
    assert len(coords) == n
    views = vp.GRIDS[model.config.model_type](processor, model, inputs, Image.open(picture), coords)
    drawn = np.concatenate([v.cells.ravel() for v in views])
    assert len(set(drawn.tolist())) == len(drawn) and drawn.min() >= 0
    description = Image.open(out).info["Description"]
    if family == "internvl":
        assert len(views) == inputs["pixel_values"].shape[0] > 1 and views[-1].title == "thumbnail"
        assert len(drawn) == n and all(v.cells.shape == (4, 4) for v in views)
    else:
        base, tiles = views
        rows = tiles.cells.shape[0]
        assert base.cells.shape == (4, 4) and len(drawn) == n - rows  # one newline token per tile-map row
        # the kept part of the stitched tiles has the picture's aspect (300 x 200) up to one token's slack
        h, w = tiles.pixels.shape[:2]
        token_px = model.config.vision_config.patch_size
        assert abs(h - w * 200 / 300) <= 2 * token_px and w == 2 * model.config.vision_config.image_size
    assert description.endswith(f"views={len(views)}")
