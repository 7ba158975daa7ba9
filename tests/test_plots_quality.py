"""quality_vs_steps: the figure's lines carry exactly the scores given, on a log step axis."""

from __future__ import annotations

import io

import numpy as np
import pytest

from rho_core.plots import quality_vs_steps

CURVES = {
    "ddpm": {1000: 0.04, 100: 0.09, 250: 0.06},  # deliberately not in step order
    "ddim": {10: 0.20, 50: 0.07, 100: 0.05},
    "dpmpp": {10: 0.08, 20: 0.05},
}


def _data_lines(ax, names):
    return {ln.get_label(): ln for ln in ax.lines if ln.get_label() in names}


def test_lines_hold_the_input_in_step_order():
    fig = quality_vs_steps(CURVES, "wasserstein", references={"paper W1": 0.035})
    (ax,) = fig.axes
    lines = _data_lines(ax, CURVES)
    assert set(lines) == set(CURVES)
    for name, points in CURVES.items():
        steps = sorted(points)
        np.testing.assert_array_equal(lines[name].get_xdata(), steps)
        np.testing.assert_array_equal(lines[name].get_ydata(), [points[k] for k in steps])
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == "linear"
    assert ax.get_xlabel() == "sampler steps"
    assert ax.get_ylabel() == "wasserstein"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["ddpm", "ddim", "dpmpp", "paper W1"]
    # x ticks at the step counts that occur, as plain integers
    ticks = sorted({k for p in CURVES.values() for k in p})
    np.testing.assert_array_equal(ax.get_xticks(), ticks)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ticks]


def test_reference_lines_are_horizontal_at_their_values():
    refs = {"paper W1": 0.035, "target": 0.05}
    fig = quality_vs_steps({"ddim": {10: 0.1, 50: 0.04}}, "rel_l2", references=refs, log_y=True)
    (ax,) = fig.axes
    lines = _data_lines(ax, refs)
    assert set(lines) == set(refs)
    for label, value in refs.items():
        np.testing.assert_array_equal(lines[label].get_ydata(), [value, value])
    assert lines["paper W1"].get_linestyle() != lines["target"].get_linestyle()
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "rel_l2 vs sampler steps"


def test_renders_without_a_display():
    buf = io.BytesIO()
    quality_vs_steps(CURVES, "wasserstein", title="SH 32³").savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("curves", "match"),
    [({}, "curves is empty"), ({"ddim": {}}, "no \\(steps"), ({"ddim": {0: 0.1}}, "≥ 1")],
)
def test_bad_input_is_refused(curves, match):
    with pytest.raises(ValueError, match=match):
        quality_vs_steps(curves, "wasserstein")
