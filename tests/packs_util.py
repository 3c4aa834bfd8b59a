"""A tiny pack config and CLI runner shared by the pack, reader and app tests."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import NoReturn

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


#: What the fork server imports once, so that each command forked from it starts with them loaded.
_PRELOAD = ["steering_core.pack.cli", "transformers", "sae_lens", "sentence_transformers"]
_forks = None


def run_cli(args: list[str], env_extra: dict | None = None, *, fresh: bool = False,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m steering_core.pack ARGS``: its exit status (-9 when it killed itself at a crash
    point), stdout and stderr. By default the command runs in a process forked from a fork server
    that imported torch, transformers, sae_lens and sentence-transformers once: a new interpreter
    spends about 14 of a tiny build's 22 s importing them, and the pack tests run some forty
    commands. The server is a fresh interpreter that never ran a test, so a command starts as clean
    as from a shell (not forked from this process, whose loaded models a child must not touch).
    ``fresh=True`` starts a new interpreter, as a shell would: for the build every other test
    reads (conftest) and the Ray tests."""
    global _forks
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    argv = [sys.executable, "-m", "steering_core.pack", *args]
    if fresh:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if _forks is None:
        import multiprocessing

        _forks = multiprocessing.get_context("forkserver")
        _forks.set_forkserver_preload(_PRELOAD)
    with tempfile.TemporaryDirectory(prefix="cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        proc = _forks.Process(target=_run_in_child, args=(list(args), env, out, err))
        with _no_main_module():
            proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(argv, timeout)
        if not out.exists():
            raise RuntimeError(f"the command's process ended (exit status {proc.exitcode}) before it started; "
                               "what it printed is in this test's captured stderr")
        return subprocess.CompletedProcess(argv, proc.exitcode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))


@contextlib.contextmanager
def _no_main_module():
    """Start a child without re-running this process's ``__main__``. multiprocessing makes every
    forkserver child run the parent's main module first, and Streamlit's AppTest leaves a page
    (``pages/sweep.py``, say) installed as ``__main__``: the child then ran that page outside
    Streamlit and died before the command started, so which tests failed depended on which test
    files a worker had run before (seen in CI as a missing stdout file)."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def _run_in_child(args: list[str], env: dict, out: Path, err: Path) -> NoReturn:
    """Run the CLI's ``main`` as the process a shell would start: its environment and folder,
    output on fds 1 and 2, and its exit status."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(ROOT)
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        sys.argv = ["python -m steering_core.pack", *args]
        from steering_core.pack.cli import main

        code = main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        gc.collect()  # closes the command's DuckDB connections, as leaving the interpreter would
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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
