"""Progress reporting for long jobs: a tqdm bar for people at a terminal and plain log lines
(with ETA) for builds running in the background, where nobody sees the bar."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm


def _fmt_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.2f}h"


@dataclass
class Progress:
    """Counts work units of one stage; resumed stages start at ``initial`` so the ETA stays honest.

    ``on_update(done, total, eta_s)`` lets a UI (Streamlit) mirror the bar; ``log_path`` gets a
    line at most every ``log_every_s`` seconds.
    """

    total: int
    desc: str
    initial: int = 0
    log_path: Path | None = None
    log_every_s: float = 15.0
    on_update: Callable[[int, int, float | None], None] | None = None
    show_bar: bool = True
    done: int = field(init=False)
    _t0: float = field(init=False)
    _last_log: float = field(init=False)
    _bar: object = field(init=False, default=None)

    def __post_init__(self):
        self.done = int(self.initial)
        self._t0 = time.perf_counter()
        self._last_log = 0.0
        if self.show_bar:
            self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, file=sys.stderr,
                             dynamic_ncols=True, mininterval=1.0)
        self.log(f"start {self.done}/{self.total}")

    @property
    def eta_s(self) -> float | None:
        fresh = self.done - self.initial
        if fresh <= 0:
            return None
        rate = fresh / max(1e-9, time.perf_counter() - self._t0)
        return (self.total - self.done) / rate

    def log(self, msg: str) -> None:
        if self.log_path is not None:
            line = f"{time.strftime('%H:%M:%S')} [{self.desc}] {msg}\n"
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self.on_update is not None:
            self.on_update(self.done, self.total, self.eta_s)
        now = time.perf_counter()
        if now - self._last_log >= self.log_every_s or self.done >= self.total:
            self._last_log = now
            eta = self.eta_s
            pct = 100.0 * self.done / max(1, self.total)
            self.log(f"{self.done}/{self.total} ({pct:.1f}%) elapsed {_fmt_seconds(now - self._t0)}"
                     + (f" ETA {_fmt_seconds(eta)}" if eta is not None else ""))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self.log(f"done {self.done}/{self.total} in {_fmt_seconds(time.perf_counter() - self._t0)}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
