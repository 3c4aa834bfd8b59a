"""``python -m steering_core.toyworld``: train the toy MLP, sweep the steering methods against the
number of steering examples, print JSON lines, and optionally save the curves (JSON) and a figure.

Each line on stdout is one JSON object with an ``event``: ``model`` (the trained model's accuracy
and time), ``point`` (one fit scored), ``summary`` (a method's mean and spread per n) and ``done``.
Bad settings print one sentence on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import torch

from steering_core.errors import SteeringCoreError
from steering_core.toyworld.adapt import resolve_methods, steering_methods
from steering_core.toyworld.curves import CurveConfig, example_counts, json_safe, run_curves
from steering_core.toyworld.data import WorldConfig, make_world
from steering_core.toyworld.mlp import TrainConfig, train_mlp


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m steering_core.toyworld",
                                description="Steering-clear toy world: steered-attribute accuracy against the "
                                            "number of steering examples, for every method.")
    p.add_argument("--m", type=int, default=60, help="attributes (the document uses 60, 90, 120)")
    p.add_argument("--layer", type=int, default=2, help="residual stream after this block (0-3)")
    p.add_argument("--methods", default="all", help="comma-separated registry names, or 'all' (pair methods)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-examples", type=int, default=4096, help="largest number of steering pairs (powers of 2)")
    p.add_argument("--min-examples", type=int, default=4)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=200, help="validation inputs for choosing alpha")
    p.add_argument("--alphas", default="1", help="comma-separated steering strengths; several: best on validation")
    p.add_argument("--attribute", type=int, default=None, help="attribute to steer (default: random per repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, default=100_000, help="pre-training samples (document: 500,000)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--stop-accuracy", type=float, default=0.995, help="stop pre-training at this validation accuracy "
                                                                      "(0 or less: train every epoch)")
    p.add_argument("--max-train-seconds", type=float, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", default=None, help="save the curves here")
    p.add_argument("--figure", default=None, help="save a PNG figure here")
    p.add_argument("--list-methods", action="store_true", help="print the usable methods and exit")
    p.add_argument("--quiet", action="store_true", help="no per-point lines")
    return p


def _emit(obj: dict) -> None:
    print(json.dumps(json_safe(obj)), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_methods:
        print("\n".join(steering_methods()))
        return 0
    torch.set_num_threads(max(1, args.threads))
    try:
        methods = None if args.methods.strip() in ("", "all") else tuple(
            s.strip() for s in args.methods.split(",") if s.strip())
        try:
            alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
        except ValueError:
            raise SteeringCoreError(f"Cannot read alphas {args.alphas!r}: write numbers separated by commas.") from None
        resolve_methods(methods)  # unknown names are refused before any training
        world = make_world(WorldConfig(m=args.m, seed=args.seed))
        config = CurveConfig(layer=args.layer, methods=methods, repeats=args.repeats,
                             ns=tuple(example_counts(args.max_examples, args.min_examples)), n_test=args.n_test,
                             n_val=args.n_val, attribute=args.attribute, alphas=alphas, seed=args.seed)
        stop = args.stop_accuracy if args.stop_accuracy and args.stop_accuracy > 0 else None
        train = TrainConfig(n_samples=args.train_samples, epochs=args.epochs, seed=args.seed, stop_accuracy=stop,
                            max_seconds=args.max_train_seconds)
        t0 = time.perf_counter()
        trained = train_mlp(world, train, on_epoch=lambda e, r: _emit(
            {"event": "epoch", "epoch": e + 1, "train_loss": r.train_loss[-1], "val_loss": r.val_loss[-1],
             "val_accuracy": r.val_accuracy[-1], "seconds": r.seconds}))
        _emit({"event": "model", "m": args.m, "accuracy": trained.report.accuracy,
               "epochs": len(trained.report.val_loss), "seconds": trained.report.seconds})
        on_point = None if args.quiet else (lambda p: _emit({"event": "point", **asdict(p)}))
        result = run_curves(trained, config, on_point=on_point)
        for name in result.methods:
            _emit({"event": "summary", "method": name, "ns": result.ns, "mean": result.mean(name),
                   "std": result.std(name), "kept_mean": result.mean(name, kept=True)})
        if args.json:
            result.save_json(args.json)
        if args.figure:
            from steering_core.toyworld.figure import save_figure

            save_figure(result, args.figure)
        _emit({"event": "done", "seconds": time.perf_counter() - t0, "curve_seconds": result.seconds,
               "notes": result.notes[:20], "json": args.json, "figure": args.figure})
    except SteeringCoreError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
