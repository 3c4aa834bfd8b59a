"""Stages declared with the stages they need, so the build order is derived instead of written
out by hand, and a missing or circular dependency is a clear error when the stage is declared
(at import time), not a half-built pack when the build reaches it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from steering_core.errors import SteeringCoreError

F = TypeVar("F", bound=Callable[..., Any])


class StageError(SteeringCoreError):
    """A stage declared with a dependency that cannot be satisfied, or asked for by a wrong name."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., None]
    needs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # work-folder files and folders the stage resumes from; redo removes them
    reset: Callable[..., None] | None = None  # what redo runs first, for a stage that changed earlier outputs


class StageRegistry:
    """Named stages and what each needs. A stage may only need stages declared before it (so
    dependencies can never form a cycle), and :meth:`order` is topological: every stage after all
    it needs, ties kept in declaration order."""

    def __init__(self) -> None:
        self._stages: dict[str, Stage] = {}

    def stage(self, name: str, needs: Iterable[str] = (), files: Iterable[str] = (),
              reset: Callable[..., None] | None = None) -> Callable[[F], F]:
        """Decorator: declare ``fn`` as stage ``name``, run after every stage in ``needs``; ``files``
        are what it leaves in the work folder to resume from (a redo starts them afresh); ``reset``
        undoes what it wrote into earlier stages' outputs (run by redo before the files go)."""
        def register(fn: F) -> F:
            self.add(Stage(name, fn, tuple(needs), tuple(files), reset))
            return fn
        return register

    def add(self, stage: Stage) -> None:
        if not stage.name or not isinstance(stage.name, str):
            raise StageError(f"A stage needs a non-empty name, not {stage.name!r}.")
        if stage.name in self._stages:
            raise StageError(f"Stage {stage.name!r} is declared twice.")
        if stage.name in stage.needs:
            raise StageError(f"Stage {stage.name!r} needs itself: a dependency cycle.")
        unknown = [n for n in stage.needs if n not in self._stages]
        if unknown:
            raise StageError(f"Stage {stage.name!r} needs {unknown}, which no stage declared before it provides "
                             f"(declared: {list(self._stages)}); declare a stage after the stages it needs.")
        self._stages[stage.name] = stage

    def order(self) -> list[str]:
        """Stage names in run order: each after everything it needs, otherwise in declaration order."""
        out: list[str] = []
        placed: set[str] = set()

        def place(name: str) -> None:
            if name in placed:
                return
            for dep in self._stages[name].needs:
                place(dep)
            placed.add(name)
            out.append(name)

        for name in self._stages:
            place(name)
        return out

    def needs(self, name: str) -> tuple[str, ...]:
        return self[name].needs

    def downstream(self, names: Iterable[str]) -> list[str]:
        """``names`` and every stage that needs one of them, directly or not, in run order: what
        must run again once their results change (a redo of ``effects`` alone would leave the
        neighbours, approximator, labels and the shipped pack built on the old effects)."""
        hit = set(names)
        for name in self.order():
            if any(dep in hit for dep in self._stages[name].needs):
                hit.add(name)
        return [n for n in self.order() if n in hit]

    def __getitem__(self, name: str) -> Stage:
        try:
            return self._stages[name]
        except KeyError:
            raise StageError(f"Unknown stage {name!r}; stages: {self.order()}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages[n] for n in self.order())

    def __len__(self) -> int:
        return len(self._stages)
