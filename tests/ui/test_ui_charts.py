"""ui.charts: a band is drawn in its own curve's colour with no markers of its own (a user-style
audit found the Toy world's bands drawn as dots in the next method's colour), and legends sit
above the plot, clear of the x axis."""

from __future__ import annotations

import math

import plotly.colors
import plotly.graph_objects as go

from ui.charts import LEGEND_ABOVE, PALETTE, add_band


def test_a_band_is_a_filled_outline_in_its_curves_colour_without_markers():
    fig = go.Figure()
    for i in range(3):
        add_band(fig, [1, 2, 4], [0.1 * i, 0.2, 0.3], [0.05, 0.05, 0.05], f"m{i}", i)
    bands, lines = fig.data[0::2], fig.data[1::2]
    for i, (band, line) in enumerate(zip(bands, lines)):
        assert band.mode == "lines" and band.fill == "toself" and band.showlegend is False
        r, g, b = plotly.colors.hex_to_rgb(PALETTE[i])
        assert band.fillcolor == f"rgba({r},{g},{b},0.15)" and line.line.color == PALETTE[i]
        assert list(band.y[:3]) == [m + 0.05 for m in (0.1 * i, 0.2, 0.3)]
        assert list(band.y[3:]) == [m - 0.05 for m in (0.3, 0.2, 0.1 * i)]


def test_a_curve_without_spread_is_a_line_alone():
    fig = go.Figure()
    add_band(fig, [0, 1], [1.0, 2.0], None, "x", 0, width=4)
    assert len(fig.data) == 1 and fig.data[0].line.width == 4


def test_a_curve_with_an_unknown_spread_gets_no_band():
    """One rollout per point leaves SEs unknown (NaN): no band, rather than a band with holes."""
    fig = go.Figure()
    add_band(fig, [0, 1, 2], [1.0, 2.0, 1.5], [0.0, float("nan"), float("nan")], "x", 0)
    assert len(fig.data) == 1 and fig.data[0].mode == "lines+markers"


def test_the_legend_sits_above_the_plot():
    assert LEGEND_ABOVE["yanchor"] == "bottom" and LEGEND_ABOVE["y"] > 1


def test_layer_sweep_figure_draws_the_wilson_interval_around_each_accuracy():
    from steering_core.vectors.evaluation import LayerScore
    from ui.charts import layer_sweep_figure

    scores = [LayerScore(l, "caa", acc, gap, 0.9, 1.0, 10, lo, hi, glo, ghi)
              for l, acc, gap, lo, hi, glo, ghi in [(0, 0.6, 0.5, 0.3, 0.8, 0.1, 0.9), (1, 0.9, 1.5, 0.6, 0.98, 1.0, 2.5)]]
    pair, probe, gap = layer_sweep_figure(scores).data
    assert list(pair.x) == [0, 1] and list(pair.y) == [0.6, 0.9]
    assert list(pair.error_y.array) == [0.8 - 0.6, 0.98 - 0.9]
    assert list(pair.error_y.arrayminus) == [0.6 - 0.3, 0.9 - 0.6]
    assert list(probe.y) == [0.9, 0.9] and list(gap.y) == [0.5, 1.5] and gap.yaxis == "y2"
    assert list(gap.error_y.array) == [0.9 - 0.5, 2.5 - 1.5] and list(gap.error_y.arrayminus) == [0.5 - 0.1, 1.5 - 1.0]
    assert all(math.isnan(x) for x in probe.error_y.array)  # no probe interval given: no bar
    y2 = layer_sweep_figure(scores).layout.yaxis2
    assert y2.rangemode == "tozero" and y2.tickmode == "auto"  # its own ticks, not 1.653, 2.04, … synced to y


def test_efficiency_figure_one_curve_per_method_in_pair_order():
    from steering_core.vectors.evaluation import EfficiencyPoint
    from ui.charts import efficiency_figure

    pts = [EfficiencyPoint("caa", 8, 0.8, 0.1, 1, 0, 3), EfficiencyPoint("probe", 2, 0.5, 0.2, 1, 0, 3),
           EfficiencyPoint("caa", 2, 0.6, 0.3, 1, 0, 3)]
    caa, probe = efficiency_figure(pts, str.upper).data
    assert caa.name == "CAA" and list(caa.x) == [2, 8] and list(caa.y) == [0.6, 0.8]
    assert list(caa.error_y.array) == [0.3, 0.1] and list(probe.x) == [2]
