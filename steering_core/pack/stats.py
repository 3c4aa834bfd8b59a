"""Per-feature statistics for feature cards: density, activation histogram, top activating
snippets with per-token activations, samples from lower quantiles, logit-lens tokens, and an
automatic short label. Two passes over cached activations; nothing here runs the model."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from steering_core.pack.corpus import Corpus
from steering_core.progress import Progress

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel


@dataclass
class StatsSpec:
    top_snippets: int = 20
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
    hist_bins: int = 16
    before: int = 16
    after: int = 4
    logit_k: int = 10
    batch_windows: int = 16


@dataclass
class Snippet:
    feature_id: int
    kind: str  # "top" or "q0.25" …
    rank: int
    max_act: float
    tokens: list[str]
    acts: list[float]


@dataclass
class FeatureStats:
    density: np.ndarray  # [d_sae] share of tokens where the feature fires
    mean_act: np.ndarray  # mean activation when firing
    max_act: np.ndarray
    hist_counts: np.ndarray  # [d_sae, bins] over (0, max_act]
    snippets: list[Snippet]
    top_tokens: list[list[str]]  # tokens at the peak of the top snippets, most common first
    top_logits: list[list[str]]
    bottom_logits: list[list[str]]
    labels: list[str]
    n_tokens: int
    extra: dict = field(default_factory=dict)

    @property
    def live(self) -> np.ndarray:
        return self.density > 0


def vocab_strings(model: SteerableModel) -> list[str]:
    """Each token id decoded on its own (what a person should see in a highlighted snippet)."""
    tok = model.tokenizer
    n = len(tok)
    return [tok.decode([i]) for i in range(n)]


def unembedding(model: SteerableModel) -> torch.Tensor:
    """``[vocab, d_model]`` unembedding matrix of either backend."""
    mod = model.module
    if model.backend.kind == "tl":
        return mod.W_U.detach().T.float()
    return mod.get_output_embeddings().weight.detach().float()


def logit_lens(model: SteerableModel, directions: torch.Tensor, k: int = 10, vocab: list[str] | None = None,
               chunk: int = 256) -> tuple[list[list[str]], list[list[str]]]:
    """Top and bottom ``k`` tokens of each direction read through the unembedding."""
    w_u = unembedding(model)
    vocab = vocab or vocab_strings(model)
    top, bottom = [], []
    with torch.no_grad():
        for i in range(0, directions.shape[0], chunk):
            logits = directions[i:i + chunk].float() @ w_u.T
            logits = logits[:, : len(vocab)]
            t = logits.topk(k, -1).indices.tolist()
            b = (-logits).topk(k, -1).indices.tolist()
            top += [[vocab[j] for j in row] for row in t]
            bottom += [[vocab[j] for j in row] for row in b]
    return top, bottom


def _clean(tok: str) -> str:
    s = tok.replace("\n", "\\n").strip()
    return s if s else repr(tok)


def auto_label(top_tokens: list[str], top_logits: list[str], live: bool) -> str:
    """A short label from what fires the feature and what it promotes (editable in the app)."""
    if not live:
        return "dead feature"
    fires = " / ".join(_clean(t) for t in top_tokens[:3]) or "?"
    promotes = ", ".join(_clean(t) for t in top_logits[:3])
    return f"{fires} → {promotes}" if promotes else fires


def _iter_batches(corpus: Corpus, acts: np.ndarray, sae: LoadedSAE, bw: int):
    n = corpus.tokens.shape[0]
    for lo in range(0, n, bw):
        hi = min(n, lo + bw)
        x = torch.from_numpy(acts[lo:hi, 1:].astype(np.float32))
        with torch.no_grad():
            f = sae.encode(x.reshape(-1, x.shape[-1])).reshape(hi - lo, x.shape[1], -1)
        yield lo, hi, f


def feature_statistics(model: SteerableModel, sae: LoadedSAE, corpus: Corpus, acts: np.ndarray,
                       spec: StatsSpec = StatsSpec(), log_path=None, show_bar: bool = True) -> FeatureStats:
    """All card statistics in two passes over the corpus activations (position 0 excluded)."""
    n_win, w = corpus.tokens.shape
    d_sae = sae.d_sae
    count = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    win_max = torch.zeros(n_win, d_sae)
    win_arg = torch.zeros(n_win, d_sae, dtype=torch.int16)
    steps = -(-n_win // spec.batch_windows)
    with Progress(2 * steps, "stats", log_path=log_path, show_bar=show_bar) as bar:
        for lo, hi, f in _iter_batches(corpus, acts, sae, spec.batch_windows):
            count += (f > 0).sum((0, 1)).double()
            total += f.sum((0, 1)).double()
            m, a = f.max(1)
            win_max[lo:hi] = m
            win_arg[lo:hi] = (a + 1).to(torch.int16)  # +1: position 0 was skipped
            bar.update(1)
        max_act = win_max.max(0).values
        n_tok = n_win * (w - 1)
        # which windows each feature shows: top-k and quantile samples
        wanted: dict[int, list[tuple[int, str, int]]] = {}
        picks: dict[int, list[tuple[int, str, int]]] = {}
        k = spec.top_snippets
        order = win_max.argsort(0, descending=True)  # [n_win, d_sae]
        n_pos = (win_max > 0).sum(0)
        for fid in range(d_sae):
            npos = int(n_pos[fid])
            if npos == 0:
                continue
            col = order[:, fid]
            chosen = [(int(col[r]), "top", r) for r in range(min(k, npos))]
            rest = npos - len(chosen)
            if rest > 0:
                for qi, q in enumerate(spec.quantiles):
                    # descending order: the q-quantile of the remaining windows sits (1-q) of the way down
                    r = min(npos - 1, k + int(round((1 - q) * (rest - 1))))
                    chosen.append((int(col[r]), f"q{q:g}", qi))
            picks[fid] = chosen
            for win, kind, rank in chosen:
                wanted.setdefault(win, []).append((fid, kind, rank))
        vocab = vocab_strings(model)
        hist = torch.zeros(d_sae, spec.hist_bins, dtype=torch.int64)
        snippets: list[Snippet] = []
        safe_max = max_act.clamp(min=1e-12)
        for lo, hi, f in _iter_batches(corpus, acts, sae, spec.batch_windows):
            nz = f.nonzero(as_tuple=True)
            vals = f[nz]
            feat = nz[2]
            b = (vals / safe_max[feat] * spec.hist_bins).long().clamp(max=spec.hist_bins - 1)
            hist.view(-1).index_add_(0, feat * spec.hist_bins + b, torch.ones_like(b))
            for win in range(lo, hi):
                for fid, kind, rank in wanted.get(win, ()):
                    peak = int(win_arg[win, fid])
                    s, e = max(1, peak - spec.before), min(w, peak + spec.after + 1)
                    toks = corpus.tokens[win, s:e].tolist()
                    a = f[win - lo, s - 1:e - 1, fid].tolist()
                    snippets.append(Snippet(fid, kind, rank, float(win_max[win, fid]),
                                            [vocab[t] if t < len(vocab) else "?" for t in toks],
                                            [round(float(v), 4) for v in a]))
            bar.update(1)
    density = (count / max(1, n_tok)).numpy()
    mean_act = (total / count.clamp(min=1)).numpy()
    # tokens at the peak of each feature's top snippets
    top_tokens: list[list[str]] = [[] for _ in range(d_sae)]
    for fid, chosen in picks.items():
        c = Counter()
        for win, kind, _ in chosen:
            if kind == "top":
                c[vocab[int(corpus.tokens[win, int(win_arg[win, fid])])]] += 1
        top_tokens[fid] = [t for t, _ in c.most_common(5)]
    dirs = sae.W_dec.detach().float()
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    top_l, bot_l = logit_lens(model, dirs, spec.logit_k, vocab)
    live = density > 0
    labels = [auto_label(top_tokens[i], top_l[i], bool(live[i])) for i in range(d_sae)]
    return FeatureStats(density=density, mean_act=mean_act, max_act=max_act.numpy(), hist_counts=hist.numpy(),
                        snippets=snippets, top_tokens=top_tokens, top_logits=top_l, bottom_logits=bot_l,
                        labels=labels, n_tokens=n_tok)
