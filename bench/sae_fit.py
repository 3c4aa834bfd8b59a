"""How well a pack's SAE reconstructs its layer, on the build's held-out windows, on other draws of
as many windows, on every window, and optionally on a corpus generated afresh by the same recipe:
explained variance over all tokens and over the typical ones (attention sinks left out), each with
its bootstrap SE over windows, and the spliced-in ΔCE with its SE.

    python -m bench.sae_fit [--config packs/embedded.toml] [--draws 4] [--fresh DIR]

Needs the build folder's corpus and activations (``cache/build/<name>/``, kept after a build);
``--fresh DIR`` generates a new corpus and its activations there (about 5 min for the embedded
pack) and measures on it too. One JSON line per set of windows and figure."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from bench.common import emit, log
from steering_core.pack.config import load_config, resolve_layer
from steering_core.pack.corpus import Corpus, build_corpus
from steering_core.pack.sae_training import SAEMetrics, compute_activations, evaluate_sae


def _report(corpus: str, windows: str, m: SAEMetrics) -> None:
    tags = {"corpus": corpus, "windows": windows, "tokens": m.heldout_tokens}
    emit("sae_ev_typical", m.explained_variance_typical, "share", se=round(m.explained_variance_typical_se, 4), **tags)
    emit("sae_ev_all_tokens", m.explained_variance, "share", se=round(m.explained_variance_se, 4),
         massive_tokens=m.massive_tokens, massive_variance_share=round(m.massive_variance_share, 3), **tags)
    emit("sae_delta_ce", m.delta_ce, "nats", se=round(m.delta_ce_se, 4), **tags)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="packs/embedded.toml")
    ap.add_argument("--draws", type=int, default=4, help="other random sets of as many windows as the held-out")
    ap.add_argument("--fresh", type=Path, help="generate a new corpus here and measure on it too")
    args = ap.parse_args(argv)
    cfg = load_config(Path(args.config))
    from steering_core.model.loading import load_model
    from steering_core.model.saes import load_sae_from_disk

    build = cfg.workdir
    if not (build / "corpus.npz").exists() or not (build / "acts.npy").exists():
        raise SystemExit(f"{build} holds no corpus and activations: build the pack first (its build folder is kept).")
    model = load_model(cfg.model, precision=cfg.precision)
    sae = load_sae_from_disk(build / "sae", model)  # the SAE the build measured, trained or given
    layer = resolve_layer(cfg, model)
    corpora = [("build", Corpus.load(build / "corpus.npz"), np.load(build / "acts.npy", mmap_mode="r"))]
    if args.fresh is not None:
        log(f"generating a fresh corpus in {args.fresh} …")
        fresh = Corpus.load(build_corpus(model, cfg.corpus, args.fresh, cfg.seed, show_bar=False))
        corpora.append(("fresh", fresh, compute_activations(model, fresh, layer, args.fresh / "acts.npy",
                                                            show_bar=False)))
    rng = np.random.default_rng(0)
    for name, corpus, acts in corpora:
        n, held = len(corpus.tokens), int(corpus.heldout.sum())
        sets = {"held-out": corpus.heldout, "all": np.ones(n, bool)}
        for i in range(args.draws):
            mask = np.zeros(n, bool)
            mask[rng.choice(n, held, replace=False)] = True
            sets[f"random draw {i + 1}"] = mask
        for label, mask in sets.items():
            log(f"{name}: {label} ({int(mask.sum())} windows)")
            _report(name, label, evaluate_sae(model, sae, dataclasses.replace(corpus, heldout=mask), acts, layer))


if __name__ == "__main__":
    main()
