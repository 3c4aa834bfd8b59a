"""Small plotting helpers the pages share: a curve with a ± band in the curve's own colour."""

from __future__ import annotations

from typing import Sequence

import plotly.colors
import plotly.graph_objects as go

PALETTE = plotly.colors.qualitative.Plotly


def add_band(fig: go.Figure, x: Sequence[float], mean: Sequence[float], spread: Sequence[float], name: str,
             index: int) -> None:
    """A line with markers for ``mean`` and a translucent band from mean − spread to mean + spread."""
    colour = PALETTE[index % len(PALETTE)]
    r, g, b = plotly.colors.hex_to_rgb(colour)
    x = list(x)
    upper = [m + s for m, s in zip(mean, spread)]
    lower = [m - s for m, s in zip(mean, spread)]
    fig.add_scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", line=dict(width=0),
                    fillcolor=f"rgba({r},{g},{b},0.15)", showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=x, y=list(mean), name=name, mode="lines+markers", line=dict(color=colour))
