"""The wedding example of issue 19 on the embedded model: a prompting baseline against steering
vectors, and data efficiency on the prompt-pair metrics of [Purchase 2025] §3.2.2.

1. **Comparison** ([Chalnev 2024] Table 2; docs/design.md §Offline evaluation): CAA, ACE and SAE-TS
   fitted on the shipped ``wedding_vs_neutral`` training pairs at the SAE's block, and the pack's
   wedding feature (#630), each swept from 0 to 3× its own automatic α, next to the instruction
   "Always mention weddings." as a system prompt and as a prefix. Same prompts, rows, seeds and
   scorers for all (keyword hit rate × coherence). Writes ``docs/img/compare_wedding.png`` (the
   Compare report's figure, ``measure.report``), the report's CSV and settings JSON and a Markdown
   table into ``--out`` (default ``/tmp/compare_wedding``).
2. **Data efficiency** (``vectors.evaluation.prompt_pair_efficiency``): the closed-form pair methods
   (CAA, both PCAs, probe, ACE; ``--methods``), on 4, 8, 16, 35 training pairs with resamples, scored on the held-out
   pairs by target-feature activation, off-target activation and generated-word similarity. Writes
   ``docs/img/wedding_data_efficiency.png``.

Prints JSON lines {"metric", "value", "unit"} like the other bench/ scripts (the tables go to
stderr and the Markdown file). A sweep cache (``--cache``) keeps finished points, so a killed run
resumes; ``--fresh`` ignores it.

    nice -n 10 .venv/bin/python -m bench.compare_wedding > /tmp/compare_wedding.jsonl 2> /tmp/compare_wedding.log
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from bench.common import emit, log

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("I think", "Tell me about your weekend.", "Write a short story.")  # the README's worked example
KEYWORDS = ("wedding", "bride", "groom", "married")
INSTRUCTION = "Always mention weddings."
WEDDING_FEATURE = 630


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=4, help="rollouts per prompt and α")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per rollout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--position", default="diff", help="token position the vectors are fitted at")
    ap.add_argument("--feature", type=int, default=WEDDING_FEATURE)
    ap.add_argument("--repeats", type=int, default=3, help="resamples per data-efficiency point")
    ap.add_argument("--methods", default="caa,pca_diff,pca_center,probe,ace",
                    help="data-efficiency methods (comma-separated; the closed-form pair methods by default)")
    ap.add_argument("--share", type=float, default=0.3, help="consistency share of target features")
    ap.add_argument("--max-negative-share", type=float, default=0.05)
    ap.add_argument("--only", choices=("compare", "efficiency"), default=None)
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--out", type=Path, default=Path("/tmp/compare_wedding"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/compare_wedding_sweeps.duckdb"))
    ap.add_argument("--fresh", action="store_true", help="do not use the sweep cache")
    return ap.parse_args(argv)


def load(args):
    from steering_core import load_model
    from steering_core.datasets import load_example
    from steering_core.model.saes import load_sae
    from steering_core.pack.reader import default_pack_dir, open_default_pack

    t0 = time.perf_counter()
    model = load_model("embedded")
    sae = load_sae(str(default_pack_dir() / "sae"), model)
    pack = open_default_pack()
    if sae is None or pack is None:
        raise SystemExit("The shipped feature pack (cache/pack) is needed: SAE-TS, feature labels.")
    log(f"model {model.name} ({model.dtype}), SAE at block {sae.layer}, pack {pack.pack_id}, "
        f"loaded in {time.perf_counter() - t0:.1f}s")
    return model, sae, pack, load_example("wedding_vs_neutral")


def run_compare(args, model, sae, pack, ds) -> None:
    from steering_core.browse.rows import feature_table
    from steering_core.measure.comparison import DEFAULT_MULTIPLIERS, Candidate, compare
    from steering_core.measure.prompting import PromptEntry
    from steering_core.measure.report import (
        compare_settings,
        feature_source,
        make_report,
        markdown_table,
        report_zip,
        saved_vector_source,
    )
    from steering_core.measure.sweep import SweepCache, SweepSpec
    from steering_core.model.precision import dtype_name
    from steering_core.vectors.extraction import ActivationCache
    from steering_core.vectors.fitting import FitRequest, fit_dataset
    from steering_core.vectors.methods import FitContext

    t0 = time.perf_counter()
    ctx = FitContext(sae=sae, approximator=pack.approximator(), top_features=8)
    acts = ActivationCache()  # in memory: the project's activation cache is left alone
    cands, sources = [], []
    for method in ("caa", "ace", "saets"):
        _res, vec = fit_dataset(model, FitRequest(ds, sae.layer, method, args.position, f"wedding-{method}"), ctx,
                                cache=acts)
        cands.append(Candidate(vec.name, vec.unit(), vec.layer, vec.reference, vec.operator))
        sources.append(saved_vector_source(vec))
        log(f"fitted {vec.name}: norm {vec.norm:.2f}, operator {vec.operator}")
    fid = sae.check_feature(str(args.feature))
    label = feature_table(pack).label_of(fid)
    name = f"feature {fid}"
    cands.append(Candidate(name, sae.decoder_direction(fid), sae.layer))
    sources.append(feature_source(fid, sae.layer, sae.source, sae.decoder_direction(fid)))
    log(f"feature {fid}: {label!r}")
    entries = [PromptEntry("prompt (system)", INSTRUCTION, "system"), PromptEntry("prompt (prefix)", INSTRUCTION, "prefix")]
    task = SweepSpec(prompts=PROMPTS, alphas=(0.0,), samples=args.samples, new_tokens=args.tokens, seed=args.seed,
                     keywords=KEYWORDS)
    cache = None if args.fresh else SweepCache(args.cache)

    def progress(i: int, n: int, who: str) -> None:
        log(f"[compare] {i}/{n} {who} ({time.perf_counter() - t0:.0f}s)")

    rows, curves = compare(model, cands, task, cache=cache, prompts=entries, on_candidate=progress)
    seconds = time.perf_counter() - t0
    settings = compare_settings(task, sources, entries, DEFAULT_MULTIPLIERS, 0.5, model.name, dtype_name(model.dtype),
                                sae.source, notes=f"bench.compare_wedding; vectors fitted at position "
                                                  f"{args.position!r} on the dataset's training pairs")
    title = (f"wedding: {len(PROMPTS)} prompts × {args.samples} samples × {args.tokens} tokens, keywords × coherence")
    report = make_report(rows, curves, settings, title)
    args.img.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.img / "compare_wedding.png").write_bytes(report.png)
    (args.out / "compare_wedding.zip").write_bytes(report_zip(report))
    (args.out / "compare.csv").write_text(report.csv)
    (args.out / "settings.json").write_text(report.settings)
    table = markdown_table(rows, "keywords")
    (args.out / "compare_wedding.md").write_text(table)
    log(table)
    for r in rows:
        emit("peak_product", r.peak_product, "keywords×coherence", entry=r.name, kind=r.kind,
             alpha=None if math.isnan(r.alpha_at_peak) else round(r.alpha_at_peak, 2),
             auto_alpha=None if math.isnan(r.auto_alpha) else round(r.auto_alpha, 2),
             keywords=round(r.behaviour_at_peak, 4), coherence=round(r.coherence_at_peak, 4))
    emit("compare_wall_s", seconds, "s", samples=args.samples, tokens=args.tokens, prompts=len(PROMPTS),
         entries=len(rows), cached=cache is not None)


METRIC_TITLES = {"target": "target-feature activation", "off_target": "off-target activation",
                 "word_similarity": "generated-word similarity (MiniLM)"}


def efficiency_png(res, labels: dict[int, str], path: Path) -> None:
    """One panel per metric, a line per method with ±1 SD error bars over resamples, x log-scaled;
    dashed: unsteered held-out negatives; dotted: held-out positives (feature metrics)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    methods = list(dict.fromkeys(p.method for p in res.points))
    counts = sorted({p.n_pairs for p in res.points})
    for ax, metric in zip(axes, METRIC_TITLES):
        for i, m in enumerate(methods):
            pts = res.curve(metric, m)
            if pts:
                ax.errorbar([p.n_pairs for p in pts], [p.mean for p in pts], yerr=[p.sd for p in pts], marker="o",
                            capsize=3, color=f"C{i}", label=m)
        if metric in res.baseline:
            ax.axhline(res.baseline[metric], color="grey", linestyle="--", label="unsteered")
        if metric in res.positives:
            ax.axhline(res.positives[metric], color="black", linestyle=":", label="positives")
        ax.set_xscale("log", base=2)
        ax.set_xlim(counts[0] / 1.3, counts[-1] * 1.3)  # a panel of NaNs (no off-target features) still draws
        ticks = [c for i, c in enumerate(counts) if i == 0 or c >= 1.25 * counts[i - 1] or c == counts[-1]]
        ticks = [c for i, c in enumerate(ticks) if i + 1 == len(ticks) or ticks[i + 1] >= 1.25 * c]  # 32 next to 35
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("training pairs")
        ax.set_title(METRIC_TITLES[metric], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    tf = res.features
    names = ", ".join(f"#{f} {labels.get(f, '')!r}" for f in tf.target[:4]) + (" …" if len(tf.target) > 4 else "")
    fig.suptitle(f"wedding_vs_neutral, block {res.setup.layer}, α = {res.setup.alpha:g}: {len(res.heldout)} held-out "
                 f"pairs, {res.setup.repeats} resamples; targets {names}; {len(tf.off_target)} off-target features; "
                 f"{res.seconds:.0f} s", fontsize=9)
    fig.savefig(path, format="png", dpi=120)


def run_efficiency(args, model, sae, pack, ds) -> None:
    from steering_core.browse.rows import feature_table
    from steering_core.measure.prompt_pairs import FeatureSelection
    from steering_core.vectors.extraction import ActivationCache
    from steering_core.vectors.pair_efficiency import PromptPairSetup, prompt_pair_efficiency

    sel = FeatureSelection(share=args.share, max_negative_share=args.max_negative_share, seed=args.seed)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    setup = PromptPairSetup(layer=sae.layer, methods=methods, repeats=args.repeats, seed=args.seed, selection=sel)
    res = prompt_pair_efficiency(model, sae, ds, setup, cache=ActivationCache(),
                                 on_point=lambda m, c: log(f"[efficiency] {m} n={c}"))
    table = feature_table(pack)
    labels = {f: table.label_of(f) for f in res.features.target}
    log(f"target features {[(f, labels[f]) for f in res.features.target]}; "
        f"off-target {list(res.features.off_target)}")
    args.img.mkdir(parents=True, exist_ok=True)
    efficiency_png(res, labels, args.img / "wedding_data_efficiency.png")
    methods = list(dict.fromkeys(p.method for p in res.points))
    lines = ["| method | n pairs | target activation | off-target activation | word similarity | exact word |",
             "|---|---|---|---|---|---|"]
    lines.append(f"| unsteered | — | {res.baseline.get('target', math.nan):.3f} | "
                 f"{res.baseline.get('off_target', math.nan):.3f} | {res.baseline.get('word_similarity', math.nan):.3f} "
                 f"| {res.baseline.get('word_exact', math.nan):.3f} |")
    for m in methods:
        for p in res.curve("target", m):
            cells = []
            for metric in ("target", "off_target", "word_similarity", "word_exact"):
                q = next((x for x in res.curve(metric, m) if x.n_pairs == p.n_pairs), None)
                cells.append("—" if q is None else f"{q.mean:.3f} ± {q.sd:.3f}")
            lines.append(f"| {m} | {p.n_pairs} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wedding_data_efficiency.md").write_text(text)
    log(text)
    full = max(p.n_pairs for p in res.points)
    for p in res.points:
        if p.n_pairs == full:
            emit(f"efficiency_{p.metric}", p.mean, "mean", method=p.method, n_pairs=p.n_pairs)
    emit("efficiency_wall_s", res.seconds, "s", methods=len(methods), repeats=args.repeats,
         heldout=len(res.heldout), targets=list(res.features.target))


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(2)
    model, sae, pack, ds = load(args)
    if args.only in (None, "compare"):
        run_compare(args, model, sae, pack, ds)
    if args.only in (None, "efficiency"):
        run_efficiency(args, model, sae, pack, ds)


if __name__ == "__main__":
    main()
