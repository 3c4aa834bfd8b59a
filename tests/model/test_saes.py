"""SAEs: disk round trips, the encode/decode formulas, feature ids, and loading errors; on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steering_core import SAELoadError, record_residuals, tiny_model
from steering_core.model.saes import load_pretrained_sae, load_sae_from_disk, save_sae, tiny_sae

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]


def _acts(model, layer):
    ids, mask = model.tokenize(PROMPTS)
    return record_residuals(model, ids, mask, [layer])[layer][mask.bool()]  # [real tokens, d_model]


def _topk_reference(x, w_enc, k):
    pre = x @ w_enc
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


@pytest.mark.parametrize("k", [None, 4])
def test_save_and_load_round_trip(tiny, tmp_path, k):
    sae = tiny_sae(tiny, layer=2, d_sae=48, seed=3, k=k)
    assert (sae.layer, sae.hook_name, sae.d_sae, sae.d_in) == (2, "blocks.2.hook_resid_post", 48, 64)
    path = save_sae(sae, tmp_path / "sae")
    assert (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()
    loaded = load_sae_from_disk(path, tiny)
    assert loaded.layer == sae.layer == 2
    assert loaded.hook_name == sae.hook_name
    assert loaded.source == str(path)
    assert (loaded.d_sae, loaded.d_in) == (48, 64)
    assert loaded.architecture == sae.architecture == ("standard" if k is None else "topk")
    for name in ("W_dec", "W_enc", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded.sae, name), getattr(sae.sae, name)), name
    x = _acts(tiny, 2)
    feats = sae.encode(x)
    assert torch.equal(loaded.encode(x), feats)
    assert torch.equal(loaded.decode(feats), sae.decode(feats))
    if k is not None:
        assert int(loaded.sae.cfg.k) == k
        assert bool(((feats != 0).sum(-1) <= k).all())
        assert torch.allclose(feats, _topk_reference(x, sae.W_enc, k), atol=1e-5)
    # loading without a model still places it by its hook name
    assert load_sae_from_disk(path).layer == 2


def test_resid_pre_sae_reads_the_previous_block(tiny_hf, tmp_path):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=16)
    path = save_sae(sae, tmp_path / "sae")
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.2.hook_resid_pre"
    (path / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae_from_disk(path, tiny_hf)
    assert loaded.hook_name == "blocks.2.hook_resid_pre"
    assert loaded.layer == 1


def test_standard_encode_decode_follow_the_formula(tiny):
    sae = tiny_sae(tiny, layer=1, d_sae=64, seed=1)
    x = _acts(tiny, 1)
    w_enc, w_dec = sae.W_enc, sae.W_dec
    feats = sae.encode(x)
    assert feats.shape == (x.shape[0], 64)
    assert torch.allclose(feats, torch.relu(x @ w_enc), atol=1e-5)
    assert bool((feats == 0).any()) and bool((feats > 0).any())  # the ReLU actually bites
    assert torch.allclose(sae.decode(feats), feats @ w_dec, atol=1e-5)
    assert torch.allclose(sae.encode(x.double()), feats)  # other dtypes are cast, not refused
    # tiny_sae's decoder rows are unit norm and the encoder is their transpose
    assert torch.allclose(w_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(w_enc, w_dec.T)


def test_decoder_direction_is_the_unit_decoder_row(tiny_hf):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32, seed=2)
    with torch.no_grad():
        sae.W_dec[5] *= 3.7  # a row whose norm is not 1
    row = sae.W_dec[5].clone()
    d = sae.decoder_direction(5)
    assert d.dtype == torch.float32 and d.shape == (64,)
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(d * row.norm(), row, atol=1e-5)  # parallel, same sign
    assert float(d @ row) > 0
    raw = sae.decoder_direction("5", normalize=False)
    assert torch.equal(raw, row)
    raw.zero_()  # a copy: changing it leaves the SAE alone
    assert torch.equal(sae.W_dec[5], row)
    with pytest.raises(SAELoadError, match="does not exist"):
        sae.decoder_direction(32)


def test_loaded_sae_exposes_the_live_weights(tiny_hf):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=16, seed=4)
    for name in ("W_dec", "W_enc", "b_enc", "b_dec"):
        assert getattr(sae, name) is getattr(sae.sae, name), name  # the parameter itself, not a copy
    assert sae.W_dec.shape == (sae.d_sae, sae.d_in) and sae.W_enc.shape == (sae.d_in, sae.d_sae)
    assert (sae.dtype, sae.device) == (sae.sae.W_dec.dtype, sae.sae.W_dec.device)
    with torch.no_grad():
        sae.W_dec[0] *= 2.0  # writes through to the SAE that encodes and decodes
    assert torch.equal(sae.sae.W_dec[0], sae.W_dec[0])


def test_loaded_sae_without_biases_reports_none(tiny_hf):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=16)

    class NoBias(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.W_enc, self.W_dec, self.cfg = inner.W_enc, inner.W_dec, inner.cfg

    bare = type(sae)(sae=NoBias(sae.sae), layer=sae.layer, hook_name=sae.hook_name, source="bare")
    assert bare.b_enc is None and bare.b_dec is None
    assert bare.W_dec is sae.W_dec


@pytest.mark.parametrize(
    "fid,match",
    [
        (-1, "Feature -1 does not exist: this SAE has features 0 to 31"),
        (32, "Feature 32 does not exist: this SAE has features 0 to 31"),
        ("abc", "whole number, got 'abc'"),
        ("3.5", "whole number, got '3.5'"),
        (3.5, "whole number"),
        ("", "whole number"),
        (None, "whole number"),
        ("1e3", "whole number"),
    ],
)
def test_check_feature_rejects_bad_ids(tiny_hf, fid, match):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32)
    with pytest.raises(SAELoadError, match=match):
        sae.check_feature(fid)


def test_check_feature_accepts_typed_ids(tiny_hf):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32)
    assert sae.check_feature(" 7 ") == 7
    assert sae.check_feature("0") == 0
    assert sae.check_feature(31) == 31
    assert sae.check_feature(np.int64(4)) == 4  # ids that come out of numpy / DuckDB


def test_sae_for_a_different_width_is_refused(tiny_hf, tmp_path):
    path = save_sae(tiny_sae(tiny_hf, layer=1, d_sae=16), tmp_path / "sae")
    narrow = tiny_model("hf", n_layers=3, d_model=32, seed=0)
    with pytest.raises(SAELoadError, match="d_model 32") as info:
        load_sae_from_disk(path, narrow)
    assert "length 64" in str(info.value)


def test_sae_for_a_deeper_model_is_refused(tiny_hf, tmp_path):
    path = save_sae(tiny_sae(tiny_hf, layer=2, d_sae=16), tmp_path / "sae")
    shallow = tiny_model("hf", n_layers=2, d_model=64, seed=0)
    with pytest.raises(SAELoadError, match="does not name the output of a block"):
        load_sae_from_disk(path, shallow)


def test_folder_without_cfg_json_is_refused(tiny_hf, tmp_path):
    with pytest.raises(SAELoadError, match="no cfg.json"):
        load_sae_from_disk(tmp_path, tiny_hf)
    with pytest.raises(SAELoadError, match="no cfg.json"):
        load_sae_from_disk(tmp_path / "missing", tiny_hf)
    path = save_sae(tiny_sae(tiny_hf, layer=1, d_sae=16), tmp_path / "sae")
    (path / "cfg.json").unlink()
    with pytest.raises(SAELoadError, match="no cfg.json"):
        load_sae_from_disk(path, tiny_hf)


def test_damaged_sae_folders_are_refused(tiny_hf, tmp_path):
    path = save_sae(tiny_sae(tiny_hf, layer=1, d_sae=16), tmp_path / "sae")
    (path / "sae_weights.safetensors").unlink()
    with pytest.raises(SAELoadError, match="Could not read the SAE"):
        load_sae_from_disk(path, tiny_hf)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cfg.json").write_text("not json")
    with pytest.raises(SAELoadError, match="Could not read the SAE"):
        load_sae_from_disk(bad, tiny_hf)


def test_pretrained_sae_offline_says_so():
    with pytest.raises(SAELoadError) as info:
        load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    msg = str(info.value)
    assert "gpt2-small-res-jb/blocks.8.hook_resid_pre" in msg
    assert "not on this machine" in msg and "offline" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("release,sae_id", [("", "x"), ("gpt2-small-res-jb", "  "), (None, None)])
def test_pretrained_sae_needs_release_and_id(release, sae_id):
    with pytest.raises(SAELoadError, match="Give both"):
        load_pretrained_sae(release, sae_id)
