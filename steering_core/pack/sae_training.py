"""Train an SAE on a model's residual stream with ``sae_lens``' own trainer, resumably, and say
how good it is on held-out tokens (explained variance, dead features, L0, spliced-in ΔCE)."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from steering_core.errors import SAELoadError, SteeringCoreError
from steering_core.measure.alpha import per_row_loss
from steering_core.measure.reconstruction import WindowTotals, bootstrap_se, explained_variance, variance_share
from steering_core.measure.scores import mean_and_se
from steering_core.model.massive import MASSIVE_FACTOR, massive_threshold
from steering_core.model.recording import record_residuals
from steering_core.model.saes import LoadedSAE, load_sae_from_disk
from steering_core.model.steerable import hook_name
from steering_core.model.steering import SteeringTerm, make_term, steering
from steering_core.pack.corpus import Corpus
from steering_core.progress import Progress

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

COMPLETE = "COMPLETE"


class SAETrainingError(SteeringCoreError):
    """An SAE training setting that sae_lens cannot honour (an unknown architecture)."""


@dataclass
class SAETrainSpec:
    architecture: str = "topk"  # a key of ARCHITECTURES
    d_sae: int = 3072
    k: int = 32  # active features per token (topk), or on average over a batch (batchtopk)
    training_tokens: int = 1_500_000
    batch_size: int = 1024
    lr: float = 4e-4
    n_checkpoints: int = 8
    aux_loss_coefficient: float = 1.0  # topk, batchtopk: weight of the dead-feature auxiliary loss
    sparsity_coefficient: float = 1.0  # standard, gated: L1 weight; jumprelu: L0 weight
    # steps without firing before a feature counts as dead and gets the auxiliary loss's gradient;
    # None: a quarter of the run (capped at 1000)
    dead_feature_window: int | None = None


@dataclass(frozen=True)
class Architecture:
    """One sae_lens training architecture: which of the spec's settings set its sparsity."""

    name: str  # sae_lens' registry key
    label: str  # how the pack's meta names it
    sparsity: Callable[[SAETrainSpec], dict[str, Any]]  # sae_lens config kwargs from the spec
    sparsity_text: Callable[[SAETrainSpec], str]


def _topk(s: SAETrainSpec) -> dict[str, Any]:
    return {"k": s.k, "aux_loss_coefficient": s.aux_loss_coefficient}


#: The SAE architectures the pack can train, each one sae_lens training class. TopK is the default
#: because it fixes L0 by construction (no sparsity coefficient to tune on a CPU budget) and
#: sae_lens' auxiliary loss keeps dead features down; BatchTopK is saved by sae_lens as JumpReLU.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("topk", "TopK", _topk, lambda s: f"k={s.k}"),
    Architecture("batchtopk", "BatchTopK", _topk, lambda s: f"k={s.k}"),
    Architecture("jumprelu", "JumpReLU", lambda s: {"l0_coefficient": s.sparsity_coefficient},
                 lambda s: f"L0 coefficient={s.sparsity_coefficient:g}"),
    Architecture("standard", "standard ReLU", lambda s: {"l1_coefficient": s.sparsity_coefficient},
                 lambda s: f"L1 coefficient={s.sparsity_coefficient:g}"),
    Architecture("gated", "gated", lambda s: {"l1_coefficient": s.sparsity_coefficient},
                 lambda s: f"L1 coefficient={s.sparsity_coefficient:g}"),
)}


def architecture(name: str) -> Architecture:
    """The architecture a config names; an unknown name is refused with the list of known ones."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise SAETrainingError(f"Unknown SAE architecture {name!r}; known: {', '.join(ARCHITECTURES)}.") from None


def describe_training(spec: SAETrainSpec) -> str:
    """How the pack's meta (``sae_id``) names an SAE trained from ``spec``."""
    arch = architecture(spec.architecture)
    return f"trained here with sae_lens ({arch.label} {arch.sparsity_text(spec)})"


# -- activations ---------------------------------------------------------------------------------


def compute_activations(model: SteerableModel, corpus: Corpus, layer: int, path: Path, batch_windows: int = 32,
                        log_path: Path | None = None, show_bar: bool = True) -> np.memmap:
    """Residuals after ``layer`` for every corpus window, in a float16 memmap.

    Progress is a small JSON written only after the rows it counts are flushed, so a kill costs at
    most one batch and never leaves counted-but-missing rows.
    """
    n, w = corpus.tokens.shape
    shape = (n, w, model.d_model)
    mode = "r+" if path.exists() else "w+"
    acts = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=shape)
    if tuple(acts.shape) != shape:
        raise SAELoadError(f"{path} holds activations of shape {acts.shape}, expected {shape}; delete it to rebuild.")
    state = path.with_suffix(".progress.json")
    done = json.loads(state.read_text())["windows"] if state.exists() else 0
    with Progress(n, "activations", initial=done, log_path=log_path, show_bar=show_bar) as bar:
        while done < n:
            hi = min(n, done + batch_windows)
            ids = torch.from_numpy(corpus.tokens[done:hi]).to(model.device)
            res = record_residuals(model, ids, None, [layer])[layer]
            acts[done:hi] = res.float().cpu().numpy().astype(np.float16)
            acts.flush()
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"windows": hi}))
            tmp.replace(state)
            bar.update(hi - done)
            done = hi
    return acts


def token_rows(corpus: Corpus, heldout: bool) -> np.ndarray:
    """Flat indices (window * W + pos) of the tokens an SAE sees: position 0 of each window is
    skipped because it acts as an attention sink with an outsized norm, and so are tokens outside
    the corpus's content mask (chat template, system and user prompts)."""
    w = corpus.tokens.shape[1]
    wins = np.nonzero(corpus.heldout == heldout)[0]
    pos = np.arange(1, w)
    flat = (wins[:, None] * w + pos[None, :]).reshape(-1)
    return flat[corpus.content.reshape(-1)[flat]]


def _batches(flat: np.ndarray, rows: np.ndarray, batch: int, seed: int, start_sample: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches, epoch e shuffled with seed+e; starts at ``start_sample`` so a
    resumed run continues the same stream."""
    n = len(rows)
    epoch, offset = divmod(start_sample, n)
    while True:
        order = rows[np.random.default_rng(seed + epoch).permutation(n)]
        for i in range(offset, n - batch + 1, batch):
            idx = np.sort(order[i:i + batch])
            yield torch.from_numpy(flat[idx].astype(np.float32))
        epoch, offset = epoch + 1, 0


# -- training ------------------------------------------------------------------------------------


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in ckpt_dir.glob("*") if (p / COMPLETE).exists() and p.name.isdigit()]
    return max(done, key=lambda p: int(p.name)) if done else None


@contextlib.contextmanager
def _sae_lens_bars(show: bool) -> Iterator[None]:
    """sae_lens' trainer and scaler draw their own tqdm bars and take no switch for them; with
    ``show=False`` their modules' ``tqdm`` is a disabled one for the scope (tqdm's own
    ``TQDM_DISABLE`` is read once, at import, long before a build starts)."""
    if show:
        yield
        return
    from sae_lens.training import activation_scaler, sae_trainer

    saved = {m: m.tqdm for m in (activation_scaler, sae_trainer)}
    try:
        for m, bar in saved.items():
            m.tqdm = functools.partial(bar, disable=True)
        yield
    finally:
        for m, bar in saved.items():
            m.tqdm = bar


def train_sae(model: SteerableModel, corpus: Corpus, acts: np.ndarray, layer: int, spec: SAETrainSpec, workdir: Path,
              seed: int = 0, log_path: Path | None = None, show_bar: bool = True) -> LoadedSAE:
    """Train an SAE of ``spec.architecture`` with sae_lens' SAETrainer; resumes from the last
    complete checkpoint. ``show_bar=False`` (``build --quiet``) silences sae_lens' own bars too."""
    import sae_lens  # noqa: F401  (registers the training classes)
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.training.sae_trainer import SAETrainer

    arch = architecture(spec.architecture)
    sae_cls, cfg_cls = get_sae_training_class(arch.name)
    final = workdir / "sae"
    if (final / COMPLETE).exists():
        return load_sae_from_disk(final, model)
    ckpt_dir = workdir / "sae_checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    flat = acts.reshape(-1, acts.shape[-1])
    rows = token_rows(corpus, heldout=False)
    cfg = SAETrainerConfig(
        total_training_samples=spec.training_tokens,
        train_batch_size_samples=spec.batch_size,
        lr=spec.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(1, spec.training_tokens // spec.batch_size // 20),
        lr_decay_steps=max(1, spec.training_tokens // spec.batch_size // 5),
        lr_end=spec.lr / 10,
        n_checkpoints=spec.n_checkpoints,
        checkpoint_path=str(ckpt_dir),
        dead_feature_window=spec.dead_feature_window or max(50, min(1000, spec.training_tokens // spec.batch_size // 4)),
        feature_sampling_window=max(100, min(2000, spec.training_tokens // spec.batch_size // 2)),
        n_batches_for_norm_estimate=20,
    )
    latest = _latest_checkpoint(ckpt_dir)
    meta = SAEMetadata(hook_name=hook_name(layer), model_name=model.name)
    if latest is None:
        sae = sae_cls(cfg_cls(d_in=model.d_model, d_sae=spec.d_sae, normalize_activations="expected_average_only_in",
                              metadata=meta, **arch.sparsity(spec)))
        start = 0
    else:
        sae = sae_cls.load_from_disk(latest)
        start = int(latest.name)

    def mark_complete(checkpoint_path=None):
        if checkpoint_path is not None:
            (Path(checkpoint_path) / COMPLETE).write_text("ok")
            if log_path is not None:
                with open(log_path, "a") as fh:
                    fh.write(f"[sae] checkpoint at {Path(checkpoint_path).name} samples\n")

    with _sae_lens_bars(show_bar):
        provider = _batches(flat, rows, spec.batch_size, seed, start)
        trainer = SAETrainer(cfg, sae, provider, save_checkpoint_fn=mark_complete)
        if latest is not None:
            trainer.load_trainer_state(latest)
            trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
        else:
            trainer.activation_scaler.estimate_scaling_factor(
                d_in=model.d_model, data_provider=_batches(flat, rows, spec.batch_size, seed + 10_000, 0),
                n_batches_for_norm_estimate=20,
            )
        if log_path is not None:
            with open(log_path, "a") as fh:
                fh.write(f"[sae] training from sample {start} of {spec.training_tokens}\n")
        trained = trainer.fit()
    tmp = workdir / "sae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trained.save_inference_model(tmp)
    (tmp / COMPLETE).write_text("ok")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return load_sae_from_disk(final, model)


# -- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpliceTerm(SteeringTerm):
    """Replace the residual (all but the first position) with the SAE's reconstruction."""

    sae: object = None

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        x = hidden[:, 1:]
        out[:, 1:] = self.sae.decode(self.sae.encode(x.float())).to(hidden.dtype)
        return out


@dataclass
class SAEMetrics:
    explained_variance: float
    mean_l0: float
    dead_fraction_heldout: float
    ce_clean: float
    ce_spliced: float
    delta_ce: float
    heldout_tokens: int
    dead_fraction_corpus: float | None = None
    extra: dict = field(default_factory=dict)
    # what the headline figure leaves out (measure.reconstruction): its SE over windows, and the
    # same figure without the massive-activation tokens, which carry most of the variance
    explained_variance_se: float | None = None
    explained_variance_typical: float | None = None
    explained_variance_typical_se: float | None = None
    massive_tokens: int | None = None
    massive_variance_share: float | None = None
    massive_factor: float | None = None
    delta_ce_se: float | None = None  # over the windows, paired

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_sae(model: SteerableModel, sae: LoadedSAE, corpus: Corpus, acts: np.ndarray, layer: int,
                 max_ce_windows: int = 48, batch_tokens: int = 8192) -> SAEMetrics:
    """Held-out quality: reconstruction (EV, L0, dead) on every held-out token, and the next-token
    loss with the reconstruction spliced in at ``layer`` on up to ``max_ce_windows`` windows. EV is
    given over all tokens and over the typical ones, each with a bootstrap SE over windows: a few
    attention-sink tokens decide the all-token figure (:mod:`steering_core.measure.reconstruction`)."""
    flat = acts.reshape(-1, acts.shape[-1])
    w = corpus.tokens.shape[1]
    rows = token_rows(corpus, heldout=True)
    window = torch.from_numpy(np.searchsorted(np.nonzero(corpus.heldout)[0], rows // w))
    n_windows = int(corpus.heldout.sum())

    def batches():
        for i in range(0, len(rows), batch_tokens):
            yield i, torch.from_numpy(flat[rows[i:i + batch_tokens]].astype(np.float32))

    norms = torch.cat([x.norm(dim=1) for _, x in batches()]) if len(rows) else torch.zeros(0)
    cut = massive_threshold(norms)
    every, typical = WindowTotals.zeros(n_windows, sae.d_in), WindowTotals.zeros(n_windows, sae.d_in)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    l0 = 0.0
    with torch.no_grad():
        for i, x in batches():
            f = sae.encode(x)
            xh = sae.decode(f)
            win = window[i:i + len(x)]
            keep = norms[i:i + len(x)] <= cut
            every.add(win, x, xh)
            typical.add(win[keep], x[keep], xh[keep])
            l0 += float((f > 0).sum())
            fired |= (f > 0).any(0)
    n = every.tokens
    ev = explained_variance(every)
    wins = np.nonzero(corpus.heldout)[0][:max_ce_windows]
    ids = torch.from_numpy(corpus.tokens[wins]).to(model.device)
    zero = torch.zeros(model.d_model)
    splice = steering(model, make_term(model, layer, zero, 0.0, term_cls=SpliceTerm, sae=sae))
    clean, spliced = [], []
    for j in range(0, len(ids), 8):
        clean.append(per_row_loss(model, ids[j:j + 8]))
        spliced.append(per_row_loss(model, ids[j:j + 8], splice))
    clean_t, spliced_t = torch.cat(clean).double(), torch.cat(spliced).double()
    ce_c, ce_s = float(clean_t.mean()), float(spliced_t.mean())
    _, dce_se = mean_and_se((spliced_t - clean_t).numpy())
    return SAEMetrics(
        explained_variance=ev, mean_l0=l0 / max(1, n), dead_fraction_heldout=1.0 - float(fired.float().mean()),
        ce_clean=ce_c, ce_spliced=ce_s, delta_ce=ce_s - ce_c, heldout_tokens=n,
        explained_variance_se=bootstrap_se(every), explained_variance_typical=explained_variance(typical),
        explained_variance_typical_se=bootstrap_se(typical), massive_tokens=n - typical.tokens,
        massive_variance_share=variance_share(every.minus(typical), every), massive_factor=MASSIVE_FACTOR,
        delta_ce_se=dce_se,
    )
