"""pack.decoder: the browser's reads of the SAE decoder, one row or all rows, without sae_lens."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from steering_core.errors import FeatureLookupError
from steering_core.pack import decoder


def test_one_row_as_stored_and_all_rows_unit_length(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    w[0] = 0  # a dead feature's row stays zero, not NaN
    save_file({"W_dec": w, "W_enc": w.T.copy()}, str(tmp_path / decoder.WEIGHTS))
    np.testing.assert_array_equal(decoder.row(tmp_path, 2), w[2])
    unit = decoder.unit_matrix(tmp_path)
    np.testing.assert_array_equal(unit[0], np.zeros(3))
    np.testing.assert_allclose(unit[1:], w[1:] / np.linalg.norm(w[1:], axis=1, keepdims=True), rtol=1e-6)


def test_missing_weights_or_decoder_are_lookup_errors(tmp_path):
    with pytest.raises(FeatureLookupError, match="no SAE weights"):
        decoder.row(tmp_path, 0)
    save_file({"W_enc": np.zeros((3, 4), np.float32)}, str(tmp_path / decoder.WEIGHTS))
    for read in (lambda: decoder.row(tmp_path, 0), lambda: decoder.unit_matrix(tmp_path)):
        with pytest.raises(FeatureLookupError, match="no W_dec"):
            read()
