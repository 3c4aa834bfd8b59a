"""Activations of contrastive pairs: the residual after chosen blocks at a chosen token position.

Every fitting method starts here, and the same (model, texts, layer, position) is asked for again
and again (a layer sweep, a data-efficiency sweep, a refit with another method), so results are
cached in memory and, when a folder is given, on disk as safetensors keyed by a hash of the model
name, the texts, the layer and the position.

Positions:

* ``last``: the last token of each text (CAA's choice for prompts that end where behaviour starts);
* ``mean``: the mean over all of a text's tokens (position 0, the attention sink, excluded when
  the text has more than one token);
* ``diff``: the mean over the tokens where the two texts of a pair differ, that is every token
  after their longest common token prefix ([SAE-Gender]'s stories share a beginning; averaging it
  in would only dilute the difference). Position 0 is left out here too: a pair that differs from
  its first token ("Could you…" / "Can you…") would otherwise average in the attention sink, whose
  residual is several times the norm of any other token's, and the vector would mostly be the
  difference of two sinks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from steering_core.errors import SteeringCoreError
from steering_core.model.recording import record_residuals
from steering_core.storage.files import make_readable

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

POSITIONS = ("last", "mean", "diff")
#: Part of every cache key: raised when pooling changes, so activations pooled the old way (kept on
#: disk across versions) are recomputed rather than fitted on. 2: ``diff`` leaves out position 0.
POOLING_VERSION = 2
#: Texts per forward pass: 16 keeps a 135M model's activations for 256 tokens under 100 MB.
DEFAULT_BATCH = 16


class ExtractionError(SteeringCoreError):
    """Texts or settings that give no activations to fit on."""


@dataclass(frozen=True)
class PairActivations:
    """Activations of a dataset's pairs at one layer: ``pos`` and ``neg`` are ``[n_pairs, d_model]``."""

    layer: int
    position: str
    pos: torch.Tensor
    neg: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.pos.shape[0])

    def subset(self, idx: Sequence[int]) -> "PairActivations":
        i = torch.as_tensor(list(idx), dtype=torch.long)
        return PairActivations(self.layer, self.position, self.pos[i], self.neg[i])


def _check(model: SteerableModel, layers: Sequence[int], position: str) -> list[int]:
    if position not in POSITIONS:
        raise ExtractionError(f"Unknown token position {position!r}; choose one of {', '.join(POSITIONS)}.")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
            raise ExtractionError(f"Layer {layer!r} does not exist: {model.name} has layers 0 to {model.n_layers - 1}.")
        out.append(int(layer))
    if not out:
        raise ExtractionError("Choose at least one layer.")
    return sorted(set(out))


def _token_lists(model: SteerableModel, texts: Sequence[str]) -> list[list[int]]:
    ids, mask = model.tokenize(list(texts))
    return [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _pool(acts: torch.Tensor, mask: torch.Tensor, starts: list[int], position: str) -> torch.Tensor:
    """Pool ``[batch, pos, d]`` left-padded activations to ``[batch, d]``."""
    if position == "last":
        return acts[:, -1].float()
    out = []
    width = acts.shape[1]
    for i in range(acts.shape[0]):
        length = int(mask[i].sum())
        first = width - length  # left padding
        lo = first + starts[i]
        if length > 1:  # mean and diff: position 0, the attention sink, is left out
            lo = max(lo, first + 1)
        out.append(acts[i, lo:].float().mean(0))
    return torch.stack(out)


def extract(model: SteerableModel, texts: Sequence[str], layers: Sequence[int], position: str = "last",
            starts: Sequence[int] | None = None, batch_size: int = DEFAULT_BATCH,
            on_batch: Callable[[int], None] | None = None) -> dict[int, torch.Tensor]:
    """Residuals after each layer pooled at ``position``: ``{layer: [n_texts, d_model]}``.

    One forward pass per batch serves every layer, and it stops after the deepest one.
    ``starts`` (for ``diff``) gives, per text, the first token index to average from.
    """
    layers = _check(model, layers, position)
    texts = list(texts)
    if not texts:
        raise ExtractionError("No texts to extract activations from.")
    if starts is None:
        starts = [0] * len(texts)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(texts), max(1, batch_size)):
        chunk = texts[i:i + batch_size]
        ids, mask = model.tokenize(chunk)
        res = record_residuals(model, ids, mask, layers)
        for layer in layers:
            out[layer].append(_pool(res[layer], mask.cpu(), list(starts[i:i + batch_size]), position))
        if on_batch is not None:
            on_batch(len(chunk))
    return {layer: torch.cat(v) for layer, v in out.items()}


def diff_starts(model: SteerableModel, positives: Sequence[str],
                negatives: Sequence[str]) -> tuple[list[int], list[int]]:
    """Per pair, the first token index after the pair's common prefix (for ``diff`` pooling).

    A pair whose token sequences are identical has no differing position: that is an error, since
    it would contribute a zero difference while looking like data.
    """
    tp, tn = _token_lists(model, positives), _token_lists(model, negatives)
    sp, sn = [], []
    for k, (a, b) in enumerate(zip(tp, tn)):
        c = _common_prefix(a, b)
        if c == len(a) and c == len(b):
            raise ExtractionError(f"Pair {k + 1} tokenises to the same tokens on both sides: nothing differs.")
        # a text that is a strict prefix of the other has no token of its own: use its last token
        sp.append(min(c, len(a) - 1))
        sn.append(min(c, len(b) - 1))
    return sp, sn


class ActivationCache:
    """Pair activations keyed by (model, texts, layer, position), in memory and optionally on disk.

    Thread-safe; a disk entry is written to a temporary file and renamed, so a killed process
    leaves either a whole entry or none.
    """

    def __init__(self, folder: str | Path | None = None, max_items: int = 256):
        self.folder = Path(folder) if folder is not None else None
        self.max_items = max_items
        self._mem: dict[str, PairActivations] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_name: str, positives: Sequence[str], negatives: Sequence[str], layer: int, position: str) -> str:
        h = hashlib.sha256(json.dumps([model_name, list(positives), list(negatives), int(layer), position,
                                       POOLING_VERSION],
                                      ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()[:32]

    def get(self, key: str) -> PairActivations | None:
        with self._lock:
            if key in self._mem:
                self.hits += 1
                return self._mem[key]
        if self.folder is not None:
            path = self.folder / f"{key}.safetensors"
            if path.exists():
                from safetensors import safe_open

                try:
                    with safe_open(str(path), framework="pt") as fh:
                        meta = fh.metadata() or {}
                        pa = PairActivations(int(meta["layer"]), meta["position"], fh.get_tensor("pos"),
                                             fh.get_tensor("neg"))
                except Exception:  # a damaged cache entry is recomputed, never trusted
                    path.unlink(missing_ok=True)
                    return None
                with self._lock:
                    self.hits += 1
                    self._mem[key] = pa
                return pa
        return None

    def put(self, key: str, pa: PairActivations) -> None:
        with self._lock:
            self.misses += 1
            if len(self._mem) >= self.max_items:
                self._mem.pop(next(iter(self._mem)))
            self._mem[key] = pa
        if self.folder is not None:
            from safetensors.torch import save_file

            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{key}.{threading.get_ident()}.tmp"
            save_file({"pos": pa.pos.contiguous(), "neg": pa.neg.contiguous()}, str(tmp),
                      metadata={"layer": str(pa.layer), "position": pa.position})
            make_readable(tmp)  # safetensors writes 0600
            tmp.replace(self.folder / f"{key}.safetensors")


_DEFAULT_CACHE = ActivationCache()


def pair_activations(model: SteerableModel, positives: Sequence[str], negatives: Sequence[str], layers: Sequence[int],
                     position: str = "last", cache: ActivationCache | None = _DEFAULT_CACHE,
                     batch_size: int = DEFAULT_BATCH,
                     on_batch: Callable[[int], None] | None = None) -> dict[int, PairActivations]:
    """Activations of both sides of every pair at each layer, from the cache where possible."""
    positives, negatives = list(positives), list(negatives)
    if len(positives) != len(negatives):
        raise ExtractionError(f"{len(positives)} positive texts but {len(negatives)} negative ones: pairs must match.")
    if not positives:
        raise ExtractionError("The dataset has no pairs.")
    layers = _check(model, layers, position)
    out: dict[int, PairActivations] = {}
    missing = []
    for layer in layers:
        key = ActivationCache.key(model.name, positives, negatives, layer, position)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            out[layer] = hit
        else:
            missing.append(layer)
    if not missing and on_batch is not None:
        on_batch(2 * len(positives))  # all cached: the progress bar still reaches its end
    if missing:
        sp = sn = None
        if position == "diff":
            sp, sn = diff_starts(model, positives, negatives)
        ap = extract(model, positives, missing, position, sp, batch_size, on_batch)
        an = extract(model, negatives, missing, position, sn, batch_size, on_batch)
        for layer in missing:
            pa = PairActivations(layer, position, ap[layer], an[layer])
            out[layer] = pa
            if cache is not None:
                cache.put(ActivationCache.key(model.name, positives, negatives, layer, position), pa)
    return {layer: out[layer] for layer in layers}
