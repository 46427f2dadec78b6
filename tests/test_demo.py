import json
import os

from tinyar.cli import main


def test_demo_learns_the_spiral_and_saves_its_figures(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--steps", "400", "--out", out]) == 0
    log = json.load(open(os.path.join(out, "log.json")))
    assert log["accuracy"] > 0.9
    for name in ["model.npz", "loss_curve.png", "decision_boundary.png"]:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000, name
    with open(os.path.join(out, "decision_boundary.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "training accuracy" in capsys.readouterr().out


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tinyar ")
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
