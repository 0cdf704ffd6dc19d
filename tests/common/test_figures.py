"""Figures are written whole or not at all."""

import pytest

from clumptool.common.figures import new_figure, save_png


def test_a_figure_is_written_as_png_with_nothing_left_beside_it(tmp_path):
    fig = new_figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    target = save_png(fig, tmp_path / "out" / "curve.png", dpi=50)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["curve.png"]


def test_a_figure_that_fails_to_draw_leaves_the_earlier_file_untouched(tmp_path):
    target = tmp_path / "curve.png"
    target.write_bytes(b"earlier")
    fig = new_figure(figsize=(2, 1))
    fig.text(0.5, 0.5, r"$\undefinedcommand$")  # mathtext fails only when drawn
    with pytest.raises(ValueError):
        save_png(fig, target)
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
