"""Devices (steering_core.model.precision.resolve_device, load_model(device=…), a pack config's
``device``): ``auto`` takes a CUDA GPU when PyTorch sees one and the CPU otherwise; a CUDA device
that does not exist, and an SAE that does not fit the model, are one sentence each with nothing
written. No GPU is needed: CUDA is simulated where a test needs one to exist, and the CPU paths
(which must stay exactly what they were) are checked directly."""

from __future__ import annotations

import pytest
import torch
from packs_util import run_cli, write_config

from steering_core.model import loading
from steering_core.model.precision import DeviceError, check_device_spec, resolve_device
from steering_core.pack.builder import Builder
from steering_core.pack.config import PackConfigError, load_config
from steering_core.pack.distributed.work import DeviceSAE, model_fingerprint, on_device, same_model


def _gpus(monkeypatch, n: int) -> None:
    """Pretend PyTorch sees ``n`` CUDA devices (nothing is ever put on them here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_auto_is_the_first_gpu_when_there_is_one_else_the_cpu(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:0") and resolve_device(" CUDA:1 ") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("gpus, spec, says", [
    (0, "cuda", "PyTorch sees none"), (0, "cuda:0", "PyTorch sees none"),
    (1, "cuda:3", "CUDA device cuda:3 does not exist: this machine has 1 CUDA device (cuda:0)."),
    (2, "cuda:2", "this machine has 2 CUDA devices (cuda:0 to cuda:1)."),
])
def test_a_cuda_device_that_does_not_exist_is_one_sentence(monkeypatch, gpus, spec, says):
    _gpus(monkeypatch, gpus)
    with pytest.raises(DeviceError) as info:
        resolve_device(spec)
    msg = str(info.value)
    assert says in msg and "\n" not in msg


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "mps", "", "cpu:0"])
def test_device_settings_of_the_wrong_form_are_refused(spec):
    with pytest.raises(DeviceError, match="device must be auto, cpu, cuda or cuda:N"):
        check_device_spec(spec)


def test_load_model_refuses_a_missing_gpu_before_loading_anything(monkeypatch):
    _gpus(monkeypatch, 0)
    monkeypatch.setattr(loading, "_load", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DeviceError, match="PyTorch sees none"):
        loading.load_model("tiny", device="cuda:1")
    monkeypatch.setenv("STEERING_DEVICE", "cuda")
    with pytest.raises(DeviceError):
        loading.load_model("tiny")


def test_load_model_on_the_cpu_is_the_cpu_model(monkeypatch):
    monkeypatch.delenv("STEERING_DEVICE", raising=False)
    plain = loading.load_model("tiny")
    _gpus(monkeypatch, 0)
    for model in (loading.load_model("tiny", device="cpu"), loading.load_model("tiny", device="auto")):
        assert model.device == torch.device("cpu") and model.dtype == torch.float32
        assert same_model(model_fingerprint(model), model_fingerprint(plain))
    monkeypatch.setenv("STEERING_DEVICE", "cpu")
    assert loading.load_model("tiny").device == torch.device("cpu")


def test_fingerprints_tell_models_apart():
    a, b = loading.load_model("tiny"), loading.load_model("tiny")
    assert same_model(model_fingerprint(a), model_fingerprint(b))
    with torch.no_grad():
        next(b.module.parameters()).add_(1e-2)
    assert not same_model(model_fingerprint(a), model_fingerprint(b))


def test_an_sae_on_the_cpu_is_left_as_it_is(tiny_hf):
    """On the CPU the build's SAE is the plain one (the CPU build is unchanged); the device-following
    wrapper encodes exactly like it and hands results back on the input's device."""
    from steering_core.model.saes import tiny_sae

    sae = tiny_sae(tiny_hf, 1, d_sae=24, k=4)
    assert on_device(sae, torch.device("cpu")) is sae
    wrapped = DeviceSAE(sae=sae.sae, layer=sae.layer, hook_name=sae.hook_name, source=sae.source)
    x = torch.randn(5, tiny_hf.d_model)
    assert torch.equal(wrapped.encode(x), sae.encode(x)) and wrapped.encode(x).device == x.device
    assert torch.equal(wrapped.decode(sae.encode(x)), sae.decode(sae.encode(x)))


def test_the_config_device_is_checked_and_kept(tmp_path):
    cfg = load_config(write_config(tmp_path, device="CUDA:1"))
    assert cfg.device == "cuda:1" and cfg.to_dict()["device"] == "cuda:1"
    assert load_config(write_config(tmp_path)).device == "auto"
    with pytest.raises(PackConfigError, match="device must be"):
        load_config(write_config(tmp_path, device="gpu"))


def test_a_builder_on_a_missing_gpu_writes_nothing(tmp_path, monkeypatch):
    _gpus(monkeypatch, 0)
    cfg = load_config(write_config(tmp_path, device="cuda:0"))
    with pytest.raises(DeviceError):
        Builder(cfg, show_bar=False)
    assert not (tmp_path / "build").exists()


def test_the_cli_refuses_a_missing_cuda_device_in_one_sentence(tmp_path):
    cfg = write_config(tmp_path, device="cuda:99")  # no machine this runs on has a hundred GPUs
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert "cuda" in line.lower() and ("does not exist" in line or "sees none" in line)
    assert not (tmp_path / "build").exists() and not (tmp_path / "pack").exists()
    res = run_cli(["build", str(write_config(tmp_path)), "--quiet", "--device", "tpu"])  # the flag is checked too
    assert res.returncode == 2 and "device must be" in _one_error_line(res.stderr)
    assert not (tmp_path / "build").exists()


def test_the_cli_refuses_an_sae_of_another_model_in_one_sentence(tmp_path):
    from steering_core.model.saes import save_sae, tiny_sae
    from steering_core.model.tiny import tiny_model

    other = tiny_model("hf", n_layers=3, d_model=32, seed=1)
    save_sae(tiny_sae(other, 1, d_sae=16), tmp_path / "wrong_sae")
    res = run_cli(["build", str(write_config(tmp_path, sae=str(tmp_path / "wrong_sae"))), "--quiet"])
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert "32" in line and "64" in line
    assert not (tmp_path / "build").exists() and not (tmp_path / "pack").exists()


def test_the_cli_refuses_an_sae_of_another_layer_in_one_sentence(tmp_path):
    from steering_core.model.saes import save_sae, tiny_sae
    from steering_core.model.tiny import tiny_model

    save_sae(tiny_sae(tiny_model("hf"), 0, d_sae=16), tmp_path / "layer0_sae")
    res = run_cli(["build", str(write_config(tmp_path, sae=str(tmp_path / "layer0_sae"))), "--quiet"])
    assert res.returncode == 2
    assert 'set hook = "blocks.0.hook_resid_post"' in _one_error_line(res.stderr)
    assert not (tmp_path / "build").exists()
