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


