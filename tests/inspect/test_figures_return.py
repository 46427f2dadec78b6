"""Every plot helper returns the Figure when given no path (to show it in a notebook)."""
import numpy as np
from matplotlib.figure import Figure

from tinyar.data.hierarchy import ClassHierarchy
from tinyar.inspect.confusion import plot_confusion_matrix, plot_level_confusions
from tinyar.inspect.figures import plot_history
from tinyar.inspect.plots import plot_curves
from tinyar.train.metrics import hierarchical_report


def test_no_path_returns_the_figure_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(plot_curves(None, {"train": ([1, 2, 3], [3.0, 2.0, 1.5])}), Figure)
    assert isinstance(plot_history(None, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]),
                      Figure)
    assert isinstance(plot_confusion_matrix(None, np.eye(3, dtype=int)), Figure)
    hierarchy = ClassHierarchy(np.array([0, 0, 1]))
    report = hierarchical_report(hierarchy, np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]))
    figures = plot_level_confusions(None, report, hierarchy)
    assert len(figures) == 2 and all(isinstance(f, Figure) for f in figures)
    assert list(tmp_path.iterdir()) == []


def test_level_confusions_take_a_file_name_prefix(tmp_path):
    hierarchy = ClassHierarchy(np.array([0, 0, 1]))
    report = hierarchical_report(hierarchy, np.array([0, 1, 2]), np.array([0, 2, 2]))
    paths = plot_level_confusions(str(tmp_path), report, hierarchy, prefix="flat_")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["flat_confusion_coarse.png",
                                                         "flat_confusion_fine.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 0 for p in paths)
