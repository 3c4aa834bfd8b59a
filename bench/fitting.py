"""Vector fitting speed on the embedded model (CPU).

* ``caa_64_pairs_s``: fit CAA on 64 pairs at one layer, activation extraction included (cold
  cache), target ≤ 5 s;
* ``saets_vector_ms``: one SAE-TS vector from the shipped pack's approximator, target ≤ 100 ms;
* for context: the other pair methods on the same activations, and ``pinv_vector_ms``.
"""

from __future__ import annotations

import time

import torch

from bench.common import emit, log, timed_median
from steering_core import load_model
from steering_core.datasets import example_datasets, load_example
from steering_core.pack.reader import open_default_pack
from steering_core.vectors.extraction import ActivationCache, pair_activations
from steering_core.vectors.methods import FitContext, fit


def sixty_four_pairs() -> tuple[list[str], list[str]]:
    pos, neg = [], []
    for name in example_datasets():
        ds = load_example(name)
        pos += [p.positive for p in ds.pairs]
        neg += [p.negative for p in ds.pairs]
        if len(pos) >= 64:
            break
    return pos[:64], neg[:64]


def main() -> None:
    torch.set_num_threads(2)
    model = load_model("embedded")
    layer = model.default_layer
    pos, neg = sixty_four_pairs()
    # warm the model once (first-call allocations are not fitting time)
    pair_activations(model, pos[:2], neg[:2], [layer], cache=None)

    def caa_cold():
        acts = pair_activations(model, pos, neg, [layer], "last", cache=ActivationCache())[layer]
        return fit("caa", acts.pos, acts.neg)

    t = timed_median(caa_cold, 3)
    emit("caa_64_pairs_s", t, "s", pairs=len(pos), layer=layer, target="<= 5")
    acts = pair_activations(model, pos, neg, [layer], "last", cache=ActivationCache())[layer]
    for m in ("pca_diff", "pca_center", "probe", "ace"):
        emit(f"{m}_fit_ms", 1000 * timed_median(lambda: fit(m, acts.pos, acts.neg), 5), "ms", pairs=len(pos))

    pack = open_default_pack()
    if pack is None or pack.approximator() is None:
        log("no shipped pack with an approximator: SAE-TS timing skipped")
        return
    approx = pack.approximator()
    d_sae = approx.M.shape[1]
    ctx = FitContext(approximator=approx, sae=_PackSAE(pack), feature_weights={1: 1.0, 7: 0.5, 42: 0.25})
    fit("saets", None, None, ctx)
    t0 = time.perf_counter()
    emit("saets_vector_ms", 1000 * timed_median(lambda: fit("saets", None, None, ctx), 20), "ms",
         d_sae=d_sae, target="<= 100")
    emit("pinv_vector_ms", 1000 * timed_median(lambda: fit("pinv", None, None, ctx), 3), "ms", d_sae=d_sae)
    log(f"done in {time.perf_counter() - t0:.1f}s")


class _PackSAE:
    """The two things SAE-TS reads from an SAE (its width and decoder), from the pack."""

    def __init__(self, pack):
        w = torch.from_numpy(pack.decoder_matrix()).float()
        self.d_sae = w.shape[0]
        self.W_dec = w


if __name__ == "__main__":
    main()
