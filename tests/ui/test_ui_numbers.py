"""Measured-number tables: a missing value reads "—", never Streamlit's grey "None"."""

import pandas as pd

from ui.numbers import MISSING, display_frame


def test_a_column_with_a_missing_value_is_text_with_a_dash_and_a_full_column_stays_numeric():
    df = pd.DataFrame({"name": ["a", "b"], "alpha": [12.345, None], "se": [0.0123, float("nan")], "x": [1.0, 2.5]})
    shown, config = display_frame(df, {"alpha": "%.1f", "se": "%.3f", "x": "%.2f", "absent": "%d"})
    assert list(shown["alpha"]) == ["12.3", MISSING] and list(shown["se"]) == ["0.012", MISSING]
    assert shown["x"].dtype == float and list(shown["x"]) == [1.0, 2.5]  # sorts as numbers
    assert config["alpha"]["type_config"]["type"] == "text" and config["alpha"]["alignment"] == "right"
    assert config["x"]["type_config"]["type"] == "number" and config["x"]["type_config"]["format"] == "%.2f"
    assert "absent" not in config and list(df["alpha"].isna()) == [False, True]  # the input is untouched
