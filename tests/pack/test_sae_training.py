"""Every SAE architecture the pack can train trains a few steps on random activations, resumes
from its checkpoint, and comes back through the project's loader in sae_lens disk format; an
unknown architecture is refused with the list of known ones, in the config checks too."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from packs_util import write_config  # noqa: E402

from steering_core.model.saes import load_sae
from steering_core.pack.config import PackConfigError, load_config
from steering_core.pack.corpus import Corpus
from steering_core.pack.sae_training import (
    ARCHITECTURES,
    SAETrainingError,
    SAETrainSpec,
    architecture,
    describe_training,
    evaluate_sae,
    train_sae,
)

D_SAE, K = 32, 4


@pytest.fixture(scope="module")
def random_acts():
    """16 windows of 17 random residuals (d_model 64); the last two windows are held out."""
    n, w = 16, 17
    corpus = Corpus(tokens=np.zeros((n, w), np.int64), source=np.ones(n, np.int64), heldout=np.arange(n) >= 14)
    acts = np.random.default_rng(0).standard_normal((n, w, 64)).astype(np.float16)
    return corpus, acts


def test_the_known_architectures():
    assert {"topk", "batchtopk", "jumprelu", "standard"} <= set(ARCHITECTURES)
    assert SAETrainSpec().architecture == "topk"  # the shipped pack's SAE


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_trains_saves_and_loads(arch, random_acts, tiny_hf, tmp_path, one_thread):
    corpus, acts = random_acts
    spec = SAETrainSpec(architecture=arch, d_sae=D_SAE, k=K, training_tokens=64 * 8, batch_size=64, n_checkpoints=2)
    trained = train_sae(tiny_hf, corpus, acts, 1, spec, tmp_path, seed=0)
    folder = tmp_path / "sae"
    assert (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()
    assert json.loads((folder / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    sae = load_sae(str(folder), tiny_hf)
    assert (sae.d_sae, sae.d_in, sae.layer) == (D_SAE, 64, 1)
    assert trained.architecture == sae.architecture
    assert torch.isfinite(sae.W_dec).all()
    x = torch.from_numpy(acts[0].astype(np.float32))
    f = sae.encode(x)
    assert f.shape == (17, D_SAE) and torch.isfinite(f).all()
    assert sae.decode(f).shape == x.shape
    if arch == "topk":
        assert int((f != 0).sum(-1).max()) <= K

    # a killed run resumes from its last complete checkpoint and ends with a loadable SAE again
    checkpoints = sorted(p.name for p in (tmp_path / "sae_checkpoints").iterdir())
    assert checkpoints, "no checkpoint written"
    shutil.rmtree(folder)
    again = train_sae(tiny_hf, corpus, acts, 1, spec, tmp_path, seed=0)
    assert again.d_sae == D_SAE and load_sae(str(folder), tiny_hf).architecture == sae.architecture


def test_meta_names_the_architecture():
    assert describe_training(SAETrainSpec(k=32)) == "trained here with sae_lens (TopK k=32)"
    assert "BatchTopK k=8" in describe_training(SAETrainSpec(architecture="batchtopk", k=8))
    assert "L1 coefficient=0.5" in describe_training(SAETrainSpec(architecture="standard", sparsity_coefficient=0.5))


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(SAETrainingError, match=r"Unknown SAE architecture 'vanilla'; known: topk, batchtopk"):
        architecture("vanilla")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[sae_train]\n", '[sae_train]\narchitecture = "vanilla"\n'))
    with pytest.raises(PackConfigError, match=r"\[sae_train\] architecture: Unknown SAE architecture 'vanilla'; "
                                              r"known: topk, batchtopk, jumprelu, standard"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace('"vanilla"', '"jumprelu"'))
    assert load_config(cfg).sae_train.architecture == "jumprelu"


def test_evaluation_reports_ev_without_the_sinks_and_the_ses(random_acts, tiny_hf, tmp_path, one_thread):
    """A held-out token hundreds of times the usual norm (an attention sink) carries nearly all the
    variance; the typical-token EV is that of the other held-out tokens, and both figures equal a
    direct computation."""
    corpus, acts = random_acts
    spec = SAETrainSpec(d_sae=D_SAE, k=K, training_tokens=64 * 8, batch_size=64, n_checkpoints=1)
    train_sae(tiny_hf, corpus, acts, 1, spec, tmp_path, seed=0)
    sae = load_sae(str(tmp_path / "sae"), tiny_hf)
    planted = acts.copy()
    planted[15, 5] = 3000 / 8  # norm 3,000 where the others' is about 8
    m = evaluate_sae(tiny_hf, sae, corpus, planted, 1, max_ce_windows=2)

    def reference(x):
        with torch.no_grad():
            xh = sae.decode(sae.encode(x))
        return 1 - float(((x - xh) ** 2).sum()) / float(((x - x.mean(0)) ** 2).sum())

    # the held-out tokens, position 0 skipped as the SAE never sees it
    x = torch.from_numpy(planted[14:16, 1:].reshape(-1, 64).astype(np.float32))
    assert m.heldout_tokens == len(x) == 32
    assert m.explained_variance == pytest.approx(reference(x), abs=1e-5)
    assert m.explained_variance_typical == pytest.approx(reference(x[x.norm(dim=1) < 1000]), abs=1e-5)
    assert m.massive_tokens == 1 and m.massive_factor == 10.0
    assert m.massive_variance_share > 0.9
    assert m.explained_variance_typical_se > 0 and m.explained_variance_se >= 0
    # ΔCE's SE over the windows, paired clean against spliced: these two hold the same tokens
    assert m.delta_ce_se == 0.0 and math.isfinite(m.delta_ce)
    # unplanted, nothing is massive and the two figures agree
    plain = evaluate_sae(tiny_hf, sae, corpus, acts, 1, max_ce_windows=2)
    assert plain.massive_tokens == 0 and plain.explained_variance == pytest.approx(plain.explained_variance_typical)
