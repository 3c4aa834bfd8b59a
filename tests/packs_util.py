"""A tiny pack config and CLI runner shared by the pack, reader and app tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_TOML = """
name = "tiny"
model = "{model}"
layer = 1
out_dir = "{out}"
ship_to = "{ship}"
sae = "{sae}"
top_effects = 8
precision = "fp32"
neighbors = 5
stability_features = 4
[corpus]
generated_tokens = 600
package_tokens = 2400
window = 32
gen_batch = 8
gen_new_tokens = 16
heldout_fraction = 0.1
[sae_train]
d_sae = 40
k = 4
training_tokens = 8192
batch_size = 256
n_checkpoints = 2
[stats]
top_snippets = 3
[effects]
prompts = ["I think", "Hello", "The weather"]
new_tokens = 4
rollouts_per_prompt = 2
baseline_rollouts_per_prompt = 2
max_rows = 24
[control]
directions = 8
hub_share = 0.25
[reference]
features = 3
rollouts_per_prompt = 4
"""

#: meta keys that legitimately differ between two builds of the same config
VOLATILE = ("seconds_", "build_date", "umap_build_s", "config")


def write_config(tmp: Path, model: str = "tiny", sae: str = "train", **over) -> Path:
    text = TINY_TOML.format(model=model, out=tmp / "build", ship=tmp / "pack", sae=sae)
    for k, v in over.items():
        text = text.replace(f"\n{k} = ", f"\n{k} = {v!r}\n#", 1) if f"\n{k} = " in text else f"{k} = {v!r}\n" + text
    path = tmp / "tiny.toml"
    path.write_text(text)
    return path


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "steering_core.pack", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)



# -- comparing two builds of the same config (the Ray and device tests) ------------------------------

#: The effects stage's per-feature timing is volatile too (left out above, it failed the resume test
#: whenever the machine was busier during one of the two builds).
VOLATILE = (*VOLATILE, "effects_seconds_per_feature", "topup_seconds_per_feature")
#: meta keys that say how long or where a build ran, not what it measured
RUN_VOLATILE = VOLATILE

#: work-folder arrays the effect stages write
BUILD_ARRAYS = ("effects.npy", "effects_se.npy", "control_effects.npy", "baseline_rows.npy",
                "baseline_rows_stability.npy", "baseline_rows_reference.npy", "baseline.npy", "alpha_ref.npy",
                "topup_extra.npy", "topup_extra_se.npy")


def build_state(build: Path) -> dict:
    """Everything a build folder holds that the effect stages decide: the build database's tables
    (sorted, so only content counts) and the work-folder arrays, byte for byte."""
    import duckdb
    import numpy as np

    con = duckdb.connect(str(build / "build.duckdb"), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
               for t in ("features", "feature_effects", "generic_response", "feature_neighbors", "effect_chunks",
                         "topup_chunks", "feature_outputs")}
        out["meta"] = {k: v for k, v in con.execute("SELECT key, value FROM meta").fetchall()
                       if not k.startswith(RUN_VOLATILE)}
        out["stages"] = sorted(r[0] for r in con.execute("SELECT stage FROM stages").fetchall())
    finally:
        con.close()
    for name in BUILD_ARRAYS:
        if (build / name).exists():
            out[name] = np.load(build / name).tobytes()
    if (build / "generic.npz").exists():
        z = np.load(build / "generic.npz")
        out["generic.npz"] = {k: z[k].tobytes() for k in z.files}
    return out


def assert_same_build(a: Path, b: Path) -> None:
    """Two build folders hold identical effect-stage results (see :func:`build_state`)."""
    sa, sb = build_state(a), build_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key] == sb[key], f"{key} differs between {a} and {b}"


def copy_build(src: Path, tmp: Path, **over) -> Path:
    """A copy of the build folder ``src`` as ``tmp/build``, with a tiny config pointing at it."""
    import shutil

    shutil.copytree(src, tmp / "build")
    return write_config(tmp, **over)
