"""Per-feature statistics for feature cards: density, activation histogram, top activating
snippets with per-token activations, samples from lower quantiles, logit-lens tokens, and an
automatic short label. Two passes over cached activations; nothing here runs the model."""

from __future__ import annotations

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
    top_tokens: int = 8  # tokens kept per feature, by specificity
    scan: int = 400  # windows examined per feature while collapsing near-duplicate snippets


@dataclass
class Snippet:
    feature_id: int
    kind: str  # "top" or "q0.25" …
    rank: int
    max_act: float
    tokens: list[str]
    acts: list[float]
    similar: int = 1  # this snippet and the near-duplicates collapsed into it


@dataclass
class FeatureStats:
    density: np.ndarray  # [d_sae] share of content tokens where the feature fires
    mean_act: np.ndarray  # mean activation when firing
    max_act: np.ndarray
    hist_counts: np.ndarray  # [d_sae, bins] over (0, max_act]
    snippets: list[Snippet]
    top_tokens: list[list[str]]  # tokens the feature fires on, most specific first
    top_logits: list[list[str]]
    bottom_logits: list[list[str]]
    labels: list[str]
    n_tokens: int
    context: list[list[str]] = field(default_factory=list)  # words around the peaks of the top snippets
    descriptions: list[str] = field(default_factory=list)  # the input side, in words
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


def _iter_batches(corpus: Corpus, acts: np.ndarray, sae: LoadedSAE, bw: int):
    """SAE activations of each batch of windows, position 0 dropped and tokens outside the content
    mask zeroed (they neither count nor peak)."""
    n = corpus.tokens.shape[0]
    for lo in range(0, n, bw):
        hi = min(n, lo + bw)
        x = torch.from_numpy(acts[lo:hi, 1:].astype(np.float32))
        with torch.no_grad():
            f = sae.encode(x.reshape(-1, x.shape[-1])).reshape(hi - lo, x.shape[1], -1)
        keep = torch.from_numpy(np.ascontiguousarray(corpus.content[lo:hi, 1:]))
        yield lo, hi, f * keep.unsqueeze(-1).to(f.dtype)


def _pick_snippets(corpus: Corpus, win_max: torch.Tensor, win_arg: torch.Tensor, spec: StatsSpec
                   ) -> dict[int, list[tuple[int, str, int, int, int, int]]]:
    """Per feature, the windows its card shows, as ``(window, kind, rank, start, end, similar)``: the
    top windows with near-duplicates collapsed into the first of them (``similar`` counts them),
    then one window at each lower quantile that is not a duplicate of one already shown."""
    from steering_core.describe.inputs import content_span, snippet_key

    picks: dict[int, list] = {}
    order = win_max.argsort(0, descending=True)  # [n_win, d_sae]
    n_pos = (win_max > 0).sum(0)
    k = spec.top_snippets
    for fid in range(win_max.shape[1]):
        npos = int(n_pos[fid])
        if npos == 0:
            continue
        col = order[:npos, fid].numpy()
        seen: dict[tuple, int] = {}
        chosen: list[list] = []

        def span_key(win: int):
            peak = int(win_arg[win, fid])
            s, e = content_span(corpus.content[win], peak, spec.before, spec.after)
            return s, e, snippet_key(corpus.tokens[win], peak, s, e).parts()

        r = 0
        while r < min(npos, spec.scan) and len(chosen) < k:
            win = int(col[r])
            s, e, parts = span_key(win)
            dup = next((seen[p] for p in parts if p in seen), None)
            if dup is None:
                for p in parts:
                    seen[p] = len(chosen)
                chosen.append([win, "top", len(chosen), s, e, 1])
            else:
                chosen[dup][5] += 1
            r += 1
        rest = npos - r
        if rest > 0:
            for qi, q in enumerate(spec.quantiles):
                # descending order: the q-quantile of the remaining windows sits (1-q) of the way down
                at = min(npos - 1, r + int(round((1 - q) * (rest - 1))))
                for j in range(at, min(npos, at + 20)):  # the next window that is not a duplicate
                    win = int(col[j])
                    s, e, parts = span_key(win)
                    if not any(p in seen for p in parts):
                        for p in parts:
                            seen[p] = -1
                        chosen.append([win, f"q{q:g}", qi, s, e, 1])
                        break
        picks[fid] = [tuple(c) for c in chosen]
    return picks


def feature_statistics(model: SteerableModel, sae: LoadedSAE, corpus: Corpus, acts: np.ndarray,
                       spec: StatsSpec = StatsSpec(), log_path=None, show_bar: bool = True) -> FeatureStats:
    """All card statistics in two passes over the corpus activations, on content tokens only
    (position 0, chat templates and prompts excluded): density and histograms, deduplicated
    snippets, tokens ranked by specificity, context words, the logit lens and the input-side
    description."""
    from steering_core.describe.inputs import TokenActivationSums, context_words, specificity_scores, top_specific
    from steering_core.describe.labels import input_description, input_label

    n_win, w = corpus.tokens.shape
    d_sae = sae.d_sae
    vocab = vocab_strings(model)
    count = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    win_max = torch.zeros(n_win, d_sae)
    win_arg = torch.zeros(n_win, d_sae, dtype=torch.int16)
    sums = TokenActivationSums(max(len(vocab), int(corpus.tokens.max(initial=0)) + 1))
    tok_t = torch.from_numpy(corpus.tokens)
    steps = -(-n_win // spec.batch_windows)
    with Progress(2 * steps, "stats", log_path=log_path, show_bar=show_bar) as bar:
        for lo, hi, f in _iter_batches(corpus, acts, sae, spec.batch_windows):
            count += (f > 0).sum((0, 1)).double()
            total += f.sum((0, 1)).double()
            m, a = f.max(1)
            win_max[lo:hi] = m
            win_arg[lo:hi] = (a + 1).to(torch.int16)  # +1: position 0 was skipped
            b_i, p_i, f_i = f.nonzero(as_tuple=True)
            sums.add(f_i, tok_t[lo + b_i, p_i + 1], f[b_i, p_i, f_i])
            bar.update(1)
        max_act = win_max.max(0).values
        content = corpus.content[:, 1:]
        n_tok = int(content.sum())
        token_counts = np.bincount(corpus.tokens[:, 1:][content], minlength=sums.vocab_size)
        picks = _pick_snippets(corpus, win_max, win_arg, spec)
        wanted: dict[int, list[tuple]] = {}
        for fid, chosen in picks.items():
            for win, kind, rank, s, e, similar in chosen:
                wanted.setdefault(win, []).append((fid, kind, rank, s, e, similar))
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
                for fid, kind, rank, s, e, similar in wanted.get(win, ()):
                    toks = corpus.tokens[win, s:e].tolist()
                    a = f[win - lo, s - 1:e - 1, fid].tolist()
                    snippets.append(Snippet(fid, kind, rank, float(win_max[win, fid]),
                                            [vocab[t] if t < len(vocab) else "?" for t in toks],
                                            [round(float(v), 4) for v in a], similar))
            bar.update(1)
    density = (count / max(1, n_tok)).numpy()
    mean_act = (total / count.clamp(min=1)).numpy()
    feat_i, tok_i, act_sum = sums.result()
    spec_rows = top_specific(feat_i, tok_i, specificity_scores(feat_i, tok_i, act_sum, token_counts, d_sae), d_sae,
                             spec.top_tokens)
    top_tokens = [[vocab[t] if t < len(vocab) else "?" for t, _ in row] for row in spec_rows]
    word_counts: dict[str, int] = {}
    for t, c in enumerate(token_counts.tolist()):
        if c and t < len(vocab):
            key = vocab[t].strip().lower()
            word_counts[key] = word_counts.get(key, 0) + c
    by_feature: dict[int, list[tuple[list[str], int]]] = {}
    for sn in snippets:
        if sn.kind == "top":
            by_feature.setdefault(sn.feature_id, []).append((sn.tokens, int(np.argmax(sn.acts))))
    context = [context_words(by_feature.get(i, []), word_counts, n_tok, exclude=top_tokens[i]) for i in range(d_sae)]
    dirs = sae.W_dec.detach().float()
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    top_l, bot_l = logit_lens(model, dirs, spec.logit_k, vocab)
    live = density > 0
    labels = [input_label(top_tokens[i]) if live[i] else "dead feature" for i in range(d_sae)]
    descriptions = [input_description(top_tokens[i], context[i]) if live[i] else "" for i in range(d_sae)]
    return FeatureStats(density=density, mean_act=mean_act, max_act=max_act.numpy(), hist_counts=hist.numpy(),
                        snippets=snippets, top_tokens=top_tokens, top_logits=top_l, bottom_logits=bot_l,
                        labels=labels, n_tokens=n_tok, context=context, descriptions=descriptions)
