"""Which code a file may make taskcut import: none, unless the user says they trust it.

A model file is data. An own model's file names the factory that rebuilds it, and a custom
task names its loss and metric functions, as `"package.module:function"` references. Importing
a module runs its code, and calling a named function can do anything (`subprocess:run`,
`os:system`), so a reference read from a file is imported only when the user trusts it:

- it is named by the own-model YAML they passed (`--config`), which they wrote;
- they allowed it explicitly (`--trust-code` on the command line, `trust=True` or
  `trust=["pkg.mod:build"]` in `taskcut.load`), as `transformers`' `trust_remote_code`;
- taskcut's zoo names no code at all: its files hold a config.

Trust is scoped: `with trusting(...)` adds to it for the code inside and is gone after.
Everything that turns a file's reference into an import checks it first (`require_trusted`),
before anything is imported, and refuses in one line naming the reference and the way to
allow it.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterable, Iterator, Mapping, Union

from .errors import TaskcutError

#: `True` trusts every reference; an iterable of "module:function" strings trusts those.
Trust = Union[bool, Iterable[str], None]

#: (everything trusted, the references trusted one by one) for the code running now.
_TRUSTED: ContextVar[tuple[bool, frozenset[str]]] = ContextVar("taskcut_trusted", default=(False, frozenset()))

HOW_TO_TRUST = ("pass the own-model YAML that names it with --config (prune, score, finetune, evaluate, export), "
                "or --trust-code if you trust the file's author (Python: taskcut.load(path, trust=True))")


class UntrustedCode(TaskcutError):
    """A file names code that the user has not said they trust; nothing was imported."""


@contextlib.contextmanager
def trusting(trust: Trust) -> Iterator[None]:
    """Add `trust` (True: everything; references: those) to what is trusted inside the block."""
    everything, references = _TRUSTED.get()
    if trust is True:
        everything = True
    elif trust not in (None, False):
        if isinstance(trust, str):
            trust = [trust]
        references = references | frozenset(str(r) for r in trust)  # type: ignore[union-attr]
    token = _TRUSTED.set((everything, references))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def is_trusted(reference: str) -> bool:
    everything, references = _TRUSTED.get()
    return everything or reference in references


def require_trusted(references: Iterable[tuple[str, object]], source: str) -> None:
    """Refuse, before anything is imported, the first reference (`(what, reference)`) not trusted."""
    for what, reference in references:
        if not isinstance(reference, str) or not is_trusted(reference):
            raise UntrustedCode(f"{source} names code to run ({what} {reference!r}); a file is data and taskcut "
                                f"imports nothing it names unless you trust it: {HOW_TO_TRUST}")


def task_references(name: str, data: object) -> list[tuple[str, object]]:
    """The code references of one saved task (a custom task's loss and metric functions, a user's kind)."""
    if not isinstance(data, Mapping):
        return []
    kind = [(f"task {name!r} kind", data["kind_ref"])] if "kind_ref" in data else []  # a non-string is refused
    if data.get("kind") != "custom":
        return kind
    refs: list[tuple[str, object]] = [(f"task {name!r} loss", data.get("loss"))]
    metrics = data.get("metrics")
    if isinstance(metrics, Mapping):
        refs += [(f"task {name!r} metric {metric!r}", entry.get("fn") if isinstance(entry, Mapping) else entry)
                 for metric, entry in metrics.items()]
    # a kind reference that is no string is refused by `require_trusted`; malformed functions by the task's load
    return kind + [(what, ref) for what, ref in refs if isinstance(ref, str)]


def spec_references(spec: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Every code reference a model file's spec holds: its factory and its tasks' functions."""
    refs: list[tuple[str, object]] = []
    model = spec.get("model")
    if isinstance(model, Mapping) and "factory" in model:
        refs.append(("factory", model["factory"]))
    for tasks in (spec.get("tasks"), model.get("tasks") if isinstance(model, Mapping) else None):
        if isinstance(tasks, Mapping):
            for name, data in tasks.items():
                refs += task_references(str(name), data)
    return refs
