"""ui.charts: a band is drawn in its own curve's colour with no markers of its own (a user-style
audit found the Toy world's bands drawn as dots in the next method's colour), and legends sit
above the plot, clear of the x axis."""

from __future__ import annotations

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


def test_the_legend_sits_above_the_plot():
    assert LEGEND_ABOVE["yanchor"] == "bottom" and LEGEND_ABOVE["y"] > 1
