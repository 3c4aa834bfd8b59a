"""The stages that score a pack's effects (docs/design.md §Feature effects, §Adaptive budget):

* ``stability``: random non-dense features measured again with another seed, each on the budget
  the pack gave it (raw and specific top-10 overlap, and self-in-top-10);
* ``reference``: a few features at the paper's budget with fresh seeds, scoring the pack's effects."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import numpy as np
import torch

from steering_core.measure.effects import EffectSpec
from steering_core.measure.generic import self_in_top, top_overlap
from steering_core.pack import tables
from steering_core.pack.distributed.work import ChunkJob
from steering_core.pack.effect_stages import CHUNK, base_rows, effect_matrix, load_generic, run_chunks
from steering_core.pack.stages import stage
from steering_core.pack.topup import topped_up
from steering_core.progress import Progress

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder


def _sparse_sample(b: Builder, n: int, salt: int) -> tuple[list[int], torch.Tensor]:
    rows = tables.measured_sparse_features(b.con, b.cfg.dense_threshold)
    rng = np.random.default_rng(b.cfg.seed + salt)
    pick = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False).tolist()) if rows else []
    return [rows[i][0] for i in pick], torch.tensor([rows[i][1] for i in pick], dtype=torch.float32)


def _remeasure(b: Builder, ids: list[int], alphas: torch.Tensor, spec: EffectSpec, seed: int, name: str,
               label: str) -> torch.Tensor:
    """Effects of features ``ids`` at their stored α with another seed (its own baseline rows)."""
    rows = base_rows(b, spec, seed, name)
    jobs = [ChunkJob(n, tuple(ids[i:i + CHUNK]), tuple(alphas[i:i + CHUNK].tolist()))
            for n, i in enumerate(range(0, len(ids), CHUNK))]
    out = []
    with Progress(max(1, len(ids)), label, log_path=b.log_path, show_bar=b.show_bar) as bar:
        for job, res in run_chunks(b, jobs, label, rows, loss_match=False, spec=spec, seed=seed):
            out.append(torch.from_numpy(res.effect))
            bar.update(len(job.ids))
    return torch.cat(out) if out else torch.zeros(0, b.sae.d_sae)


def _remeasure_as_packed(b: Builder, ids: list[int], alphas: torch.Tensor, seed: int, name: str,
                        label: str) -> torch.Tensor:
    """Like :func:`_remeasure` with the pack's own budgets: the features the top-up gave more
    rollouts get as many again, so the figure says how stable the pack's numbers are as measured."""
    spec, big = b.cfg.effects, set(topped_up(b))
    out = torch.zeros(len(ids), b.sae.d_sae)
    more = dataclasses.replace(spec, rollouts_per_prompt=b.cfg.topup.rollouts_per_prompt or spec.rollouts_per_prompt)
    for group, s in (([r for r, f in enumerate(ids) if f not in big], spec),
                     ([r for r, f in enumerate(ids) if f in big], more)):
        if group:
            out[group] = _remeasure(b, [ids[r] for r in group], alphas[group], s, seed, name, label)
    return out


@stage("stability", needs=("topup",))
def stability(b: Builder) -> None:
    """Re-measure random non-dense features with another seed: how many of their top-10 effects
    come back (raw and specific), and how many features rank themselves in their own top 10."""
    ids, alphas = _sparse_sample(b, b.cfg.stability_features, 7)
    g = load_generic(b).mean
    again = _remeasure_as_packed(b, ids, alphas, b.cfg.seed + 1, "baseline_rows_stability", "stability")
    first = torch.from_numpy(np.asarray(np.load(b.dir / "effects.npy", mmap_mode="r")[ids])) if ids else again
    raw = top_overlap(first, again)
    spec = top_overlap(first - g, again - g)
    eff, live = effect_matrix(b)
    e = torch.from_numpy(eff)
    self_raw, self_spec = self_in_top(e, live), self_in_top(e - g, live)
    med = float(np.median(raw)) if raw else float("nan")
    med_s = float(np.median(spec)) if spec else float("nan")
    b.finish("stability", {"median_top10_overlap": med, "specific_median_top10_overlap": med_s},
             {"stability_median_top10_overlap": json.dumps(med), "stability_features": str(len(ids)),
              "stability_overlaps": json.dumps(raw), "self_in_top10_share": json.dumps(self_raw),
              "specific_stability_median_top10_overlap": json.dumps(med_s),
              "specific_stability_overlaps": json.dumps(spec), "specific_self_in_top10_share": json.dumps(self_spec)})


@stage("reference", needs=("stability",))
def reference(b: Builder) -> None:
    """Score the pack against a reference: random non-dense features measured again at the paper's
    budget with fresh seeds. Writes the median top-10 overlap (raw and specific) and the lists."""
    rc = b.cfg.reference
    ids, alphas = _sparse_sample(b, rc.features, 1000 + rc.seed_offset)
    spec = dataclasses.replace(b.cfg.effects, rollouts_per_prompt=rc.rollouts_per_prompt,
                               baseline_rollouts_per_prompt=rc.rollouts_per_prompt)
    ref = _remeasure(b, ids, alphas, spec, b.cfg.seed + rc.seed_offset, "baseline_rows_reference", "reference")
    g = load_generic(b).mean
    pack = torch.from_numpy(np.asarray(np.load(b.dir / "effects.npy", mmap_mode="r")[ids])) if ids else ref
    raw, spc = top_overlap(pack, ref), top_overlap(pack - g, ref - g)
    per = [{"feature": f, "overlap": o, "specific_overlap": s,
            "pack_top10": pack[r].topk(10).indices.tolist(), "reference_top10": ref[r].topk(10).indices.tolist(),
            "pack_specific_top10": (pack[r] - g).topk(10).indices.tolist(),
            "reference_specific_top10": (ref[r] - g).topk(10).indices.tolist()}
           for r, (f, o, s) in enumerate(zip(ids, raw, spc))]
    med = float(np.median(raw)) if raw else float("nan")
    med_s = float(np.median(spc)) if spc else float("nan")
    b.finish("reference", {"median": med, "specific_median": med_s},
             {"reference_top10_overlap_median": json.dumps(med),
              "specific_reference_top10_overlap_median": json.dumps(med_s),
              "reference_features": json.dumps(per), "reference_rollouts": str(spec.rows_per_vector)})
