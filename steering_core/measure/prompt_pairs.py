"""The prompt-pair steering metrics of [Purchase 2025] §3.2.2 (docs/references.md).

Template datasets (``datasets.generators.from_templates``) are pairs of prompts that differ only in
a target word, e.g. "... In the end they won" / "... they lost". Whether a vector steers such a
model from the negative target to the positive one is hard to score with one number, so the
document uses three, each blind to something the others catch:

1. **target features**: the SAE features that fire (activation > 0) on the *final token* of the
   positive examples, consistently (by default on every one of them, as the document says).
   Their mean activation on the final token of steered held-out *negative* prompts says how far
   steering moves the model's representation towards the positive target;
2. **off-target features**: a seeded random sample of features that fire on *neither* side of
   any pair. Their mean activation under steering says how much the vector disturbs features it
   has no business touching (ideally it stays at the unsteered level, near 0);
3. **generated-word similarity**: at the target slot (where the pair first differs), the next
   word the steered model writes, compared with the positive target word by embedding cosine
   (the document uses distilbert; MiniLM ships here, ``model.embeddings``) and by exact match.
   Only the word is compared; the shared text before it would dominate a sentence embedding.

"Final token" means the target's token. In the document's datasets the target is the last word,
so the two coincide; the shipped examples end in "." after the target, where the final token is
"." on both sides and its features say nothing about the concept. By default (``at="slot"``)
texts are therefore cut right after their target word (:attr:`TemplateSlot.positive_text`), which
changes nothing on data like the document's; ``at="final"`` takes the last token literally.

SAE activations are read *after* the steering at the SAE's block (``record_residuals`` with the
steering on), as the document reads the adaptor's output: with vector and SAE at the same block,
the target metric sees the vector itself. This differs on purpose from the sweep's ``target``
score, which follows docs/design.md §Feature effects and reads generated tokens unsteered;
:func:`target_spec` hands the features to that score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.measure.scores import mean_and_se
from steering_core.measure.template_slots import TemplateSlot, first_word, same_word, template_slot
from steering_core.model.sampling import row_seed

if TYPE_CHECKING:
    from steering_core.measure.sweep import SweepSpec
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel
    from steering_core.model.steering import Steering

#: Share of positive examples a feature must fire on to be a target: "consistently activated on the
#: final token across all positive examples" ([Purchase 2025] §3.2.2).
DEFAULT_TARGET_SHARE = 1.0
#: Off-target features drawn (the document says "a random selection" without a number).
DEFAULT_OFF_TARGET = 32
#: Texts per forward pass when reading final-token features, and rows per generation call.
BATCH = 32
GENERATION_BATCH = 256
#: Which token of a text the feature metrics read (see the module docstring).
POSITIONS = ("slot", "final")


class PromptPairError(SteeringCoreError):
    """Prompt-pair metrics asked of data that cannot give them (the message says why)."""


# -- target and off-target features --------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSelection:
    """How target and off-target features are chosen. ``max_negative_share`` (not in the document)
    drops targets that also fire on more than that share of negatives: the document's rule keeps
    features that fire on every text alike (dense ones, or those of a final "." both sides share),
    which say nothing about the contrast. ``at``: which token is read (see the module docstring)."""

    share: float = DEFAULT_TARGET_SHARE
    off_target: int = DEFAULT_OFF_TARGET
    seed: int = 0
    max_negative_share: float | None = None
    at: str = "slot"  # one of POSITIONS

    def checked(self) -> FeatureSelection:
        if self.at not in POSITIONS:
            raise PromptPairError(f"Read features at 'slot' or 'final', not {self.at!r}.")
        if not (isinstance(self.share, (int, float)) and 0.0 < float(self.share) <= 1.0):
            raise PromptPairError(f"The consistency share must be in (0, 1], got {self.share!r}.")
        if isinstance(self.off_target, bool) or not isinstance(self.off_target, int) or self.off_target < 0:
            raise PromptPairError(f"The number of off-target features must be a whole number ≥ 0, got {self.off_target!r}.")
        m = self.max_negative_share
        if m is not None and not (isinstance(m, (int, float)) and 0.0 <= float(m) <= 1.0):
            raise PromptPairError(f"The largest share of negatives a target may fire on must be in [0, 1], got {m!r}.")
        return self


@dataclass(frozen=True)
class TargetFeatures:
    """Target and off-target features of a dataset, with what the Vectors page shows beside each
    target (the share of positives and of negatives it fires on, its mean activation on each side)."""

    target: tuple[int, ...]
    off_target: tuple[int, ...]
    sae_layer: int
    selection: FeatureSelection
    n_pairs: int
    n_silent: int  # features that fired on neither side: the pool off-target features are drawn from
    positive_share: tuple[float, ...]  # per target, in the order of ``target``
    negative_share: tuple[float, ...]
    positive_mean: tuple[float, ...]
    negative_mean: tuple[float, ...]

    def rows(self) -> list[dict]:
        """One dict per target feature, for a table."""
        return [{"feature": f, "positive share": ps, "negative share": ns, "positive mean": pm, "negative mean": nm}
                for f, ps, ns, pm, nm in zip(self.target, self.positive_share, self.negative_share,
                                             self.positive_mean, self.negative_mean)]


def firing_share(acts: torch.Tensor) -> torch.Tensor:
    """Share of rows ``[n, d_sae]`` on which each feature fires (activation > 0), ``[d_sae]``."""
    return (acts > 0).float().mean(0)


def target_mask(pos_acts: torch.Tensor, neg_acts: torch.Tensor, share: float = DEFAULT_TARGET_SHARE,
                max_negative_share: float | None = None) -> torch.Tensor:
    """Features firing on at least ``share`` of the positives (and, when ``max_negative_share`` is
    given, on at most that share of the negatives), ``[d_sae]`` bools."""
    keep = firing_share(pos_acts) >= float(share) - 1e-9
    if max_negative_share is not None:
        keep &= firing_share(neg_acts) <= float(max_negative_share) + 1e-9
    return keep


def silent_mask(pos_acts: torch.Tensor, neg_acts: torch.Tensor) -> torch.Tensor:
    """Features that fire on no example of either side, ``[d_sae]`` bools."""
    return ~((pos_acts > 0).any(0) | (neg_acts > 0).any(0))


def sample_features(mask: torch.Tensor, count: int, seed: int = 0) -> tuple[int, ...]:
    """``count`` features drawn without replacement from those ``mask`` marks (all when fewer),
    sorted; the same seed always draws the same ones."""
    pool = torch.nonzero(mask).flatten().tolist()
    if count >= len(pool):
        return tuple(pool)
    return tuple(sorted(int(i) for i in np.random.default_rng(seed).choice(pool, size=count, replace=False)))


def select_features(pos_acts: torch.Tensor, neg_acts: torch.Tensor, selection: FeatureSelection = FeatureSelection(),
                    sae_layer: int = -1) -> TargetFeatures:
    """Target and off-target features from final-token SAE activations ``[n_pairs, d_sae]`` of both sides."""
    sel = selection.checked()
    if pos_acts.shape != neg_acts.shape or pos_acts.dim() != 2 or pos_acts.shape[0] == 0:
        raise PromptPairError("Feature selection needs matching, non-empty [pairs, d_sae] activations of both sides.")
    pos_acts, neg_acts = pos_acts.float(), neg_acts.float()
    tmask = target_mask(pos_acts, neg_acts, sel.share, sel.max_negative_share)
    silent = silent_mask(pos_acts, neg_acts) & ~tmask
    target = torch.nonzero(tmask).flatten()
    ps, ns = firing_share(pos_acts)[target], firing_share(neg_acts)[target]
    pm, nm = pos_acts[:, target].mean(0), neg_acts[:, target].mean(0)

    def tup(t: torch.Tensor) -> tuple[float, ...]:
        return tuple(float(x) for x in t)

    return TargetFeatures(tuple(int(i) for i in target), sample_features(silent, sel.off_target, sel.seed),
                          int(sae_layer), sel, int(pos_acts.shape[0]), int(silent.sum()), tup(ps), tup(ns),
                          tup(pm), tup(nm))


def mean_activation(acts: torch.Tensor, features: Sequence[int]) -> torch.Tensor:
    """Per row of ``acts`` ``[n, d_sae]``, the mean activation of ``features`` (NaN when there are none)."""
    if not len(features):
        return torch.full((acts.shape[0],), float("nan"))
    return acts[:, list(features)].float().mean(-1)


def _built(model: SteerableModel, steering: Steering | Sequence | None) -> Steering | None:
    from steering_core.model.steering import Steering as _Steering
    from steering_core.model.steering import steering as build

    if steering is None or isinstance(steering, _Steering):
        return steering
    return build(model, *steering)


def final_token_features(model: SteerableModel, sae: LoadedSAE, texts: Sequence[str],
                         steering: Steering | Sequence | None = None, batch_size: int = BATCH) -> torch.Tensor:
    """SAE activations ``[len(texts), d_sae]`` (float32) of each text's final token at the SAE's block,
    read after any steering at that block (see the module docstring). Steering with one vector per
    row runs the texts as one batch, since its rows are the texts."""
    from steering_core.model.recording import record_residuals

    texts = list(texts)
    if not texts:
        return torch.zeros((0, sae.d_sae))
    steering = _built(model, steering)
    if steering is not None and steering.rows is not None:
        batch_size = len(texts)
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = model.tokenize(texts[i:i + batch_size])
        res = record_residuals(model, ids, mask, [sae.layer], steering=steering)[sae.layer]
        out.append(sae.encode(res[:, -1].float()).float().cpu())  # left padding: -1 is every row's last token
    return torch.cat(out)


def _pairs(dataset) -> list:
    pairs = list(dataset.pairs) if hasattr(dataset, "pairs") else list(dataset)
    if not pairs:
        raise PromptPairError("The dataset has no pairs.")
    return pairs


def feature_texts(dataset, pairs: Sequence[int] | None = None, at: str = "slot") -> tuple[list[str], list[str]]:
    """The positive and negative texts whose final token the feature metrics read: cut after the
    target word where a pair has a slot (``at="slot"``), else whole."""
    if at not in POSITIONS:
        raise PromptPairError(f"Read features at 'slot' or 'final', not {at!r}.")
    allp = _pairs(dataset)
    chosen = allp if pairs is None else [allp[i] for i in pairs]
    pos, neg = [], []
    for p in chosen:
        slot = template_slot(p.positive, p.negative) if at == "slot" else None
        pos.append(slot.positive_text if slot else p.positive)
        neg.append(slot.negative_text if slot else p.negative)
    return pos, neg


def find_target_features(model: SteerableModel, sae: LoadedSAE, dataset, selection: FeatureSelection = FeatureSelection(),
                         pairs: Sequence[int] | None = None) -> TargetFeatures:
    """Target and off-target features of a dataset (a ``ContrastiveDataset`` or a list of ``Pair``),
    from ``pairs`` (indices) or else its training pairs: the features are part of the evaluation, and
    held-out pairs stay unseen by it too."""
    allp = _pairs(dataset)
    idx = list(pairs) if pairs is not None else [i for i, p in enumerate(allp) if p.split != "heldout"]
    if not idx:
        raise PromptPairError("No pairs to find target features on.")
    pos_t, neg_t = feature_texts(allp, idx, selection.checked().at)
    pos = final_token_features(model, sae, pos_t)
    neg = final_token_features(model, sae, neg_t)
    return select_features(pos, neg, selection, sae.layer)


@dataclass(frozen=True)
class FeatureScores:
    """Mean activation of the target and off-target features over texts, with standard errors."""

    target: float
    target_se: float
    off_target: float
    off_target_se: float
    n: int


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    """:func:`~steering_core.measure.scores.mean_and_se` of the finite values (one value: SE unknown)."""
    x = np.asarray(x, dtype=np.float64)
    return mean_and_se(x[np.isfinite(x)])


def feature_scores(model: SteerableModel, sae: LoadedSAE, texts: Sequence[str], features: TargetFeatures,
                   steering: Steering | Sequence | None = None) -> FeatureScores:
    """Metrics 1 and 2 on ``texts`` (held-out negatives, say), steered by ``steering`` when given."""
    acts = final_token_features(model, sae, texts, steering)
    t = _mean_se(mean_activation(acts, features.target).numpy())
    o = _mean_se(mean_activation(acts, features.off_target).numpy())
    return FeatureScores(t[0], t[1], o[0], o[1], int(acts.shape[0]))


def target_spec(spec: SweepSpec, features: TargetFeatures, which: str = "target") -> SweepSpec:
    """``spec`` with the dataset's target (or off-target) features as its behaviour score, so a sweep
    or a comparison plots them against α."""
    chosen = {"target": features.target, "off_target": features.off_target}.get(which)
    if chosen is None:
        raise PromptPairError(f"Choose 'target' or 'off_target', not {which!r}.")
    if not chosen:
        raise PromptPairError(f"The dataset has no {which.replace('_', '-')} features at this threshold; "
                              "lower the consistency share.")
    return dataclasses.replace(spec, target_features=tuple(chosen), behaviour="target")


# -- generated-word similarity (slots: measure.template_slots) --------------------------------------------


def template_slots(dataset, pairs: Sequence[int] | None = None) -> list[TemplateSlot | None]:
    """:func:`template_slot` of each pair (all, or those at ``pairs``)."""
    allp = _pairs(dataset)
    chosen = allp if pairs is None else [allp[i] for i in pairs]
    return [template_slot(p.positive, p.negative) for p in chosen]


def word_similarity(generated: Sequence[str], targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM cosine and exact match (1.0 / 0.0) of each generated word with its target. A row that
    wrote no word scores 0 on both: nothing was written at the slot."""
    from steering_core.model.embeddings import embed_texts

    if len(generated) != len(targets):
        raise PromptPairError(f"{len(generated)} generated words for {len(targets)} targets.")
    words = [first_word(w) for w in generated]
    tw = [first_word(t) for t in targets]
    vocab = sorted({w for w in words + tw if w})
    emb = dict(zip(vocab, embed_texts(vocab))) if vocab else {}
    sim = np.array([float(emb[w] @ emb[t]) if w and t else 0.0 for w, t in zip(words, tw)])
    exact = np.array([float(same_word(w, t)) for w, t in zip(words, tw)])
    return sim, exact


@dataclass(frozen=True)
class WordConfig:
    """How the word at the slot is generated. Greedy by default: the word the model most wants to
    write, so data-efficiency curves carry no sampling noise; with sampling, each (pair, sample) row
    gets its own seed (``row_seed``)."""

    new_tokens: int = 4
    temperature: float = 0.0
    top_k: int | None = 50
    samples: int = 1
    seed: int = 0


def next_words(model: SteerableModel, prefixes: Sequence[str], steering: Steering | Sequence | None = None,
               config: WordConfig = WordConfig(), pair_ids: Sequence[int] | None = None) -> list[str]:
    """The first word the (steered) model writes after each prefix, ``config.samples`` rows per prefix
    (prefix-major). Row (i, j) samples with seed ``row_seed(config.seed, pair_ids[i], j)``: samples
    never share a seed, and the same pair gets the same seeds steered and unsteered, so their words
    differ by the steering only. Steering with one vector per row runs every row in one call."""
    from steering_core.model.generation import GenerationConfig, generate

    ids = list(range(len(prefixes))) if pair_ids is None else [int(i) for i in pair_ids]
    if len(ids) != len(prefixes):
        raise PromptPairError(f"{len(ids)} pair ids for {len(prefixes)} prefixes.")
    rows = [p for p in prefixes for _ in range(config.samples)]
    seeds = [row_seed(config.seed, i, j) for i in ids for j in range(config.samples)]
    steering = _built(model, steering)
    size = len(rows) if steering is not None and steering.rows is not None else GENERATION_BATCH
    cfg = GenerationConfig(max_new_tokens=config.new_tokens, temperature=config.temperature, top_k=config.top_k)
    out: list[str] = []
    for i in range(0, len(rows), size):
        res = generate(model, rows[i:i + size], cfg, steering=steering, row_seeds=seeds[i:i + size])
        out += [first_word(t) for t in res.texts]
    return out


@dataclass(frozen=True)
class WordScores:
    """Metric 3 over template slots: mean similarity and exact-match rate, with standard errors,
    and the words themselves (row by row, as generated)."""

    similarity: float
    similarity_se: float
    exact: float
    exact_se: float
    words: tuple[str, ...]
    targets: tuple[str, ...]


def generated_word_scores(model: SteerableModel, slots: Iterable[TemplateSlot | None],
                          steering: Steering | Sequence | None = None, config: WordConfig = WordConfig()) -> WordScores:
    """Write the next word at every slot (``None`` slots are skipped) and compare it with the positive target."""
    slots = [s for s in slots if s is not None]
    if not slots:
        raise PromptPairError("No pair has a target slot (two texts that agree up to a word and then differ); "
                              "the generated-word score needs a template dataset.")
    words = next_words(model, [s.prefix for s in slots], steering, config)
    targets = [s.positive for s in slots for _ in range(config.samples)]
    sim, exact = word_similarity(words, targets)
    s, e = _mean_se(sim), _mean_se(exact)
    return WordScores(s[0], s[1], e[0], e[1], tuple(words), tuple(targets))
