"""The house's rules, read from the code's own imports (docs/architecture.md): the domain
imports no framework and nothing above it, the plumbing nothing above itself, no channel
another channel, nothing imports back up, and every import stands at module top."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHANNELS = {"sms", "ivr"}
SURFACES = {"api", "console", "track", "open311"}
# each package and what it may import of ours (besides itself)
MAY_IMPORT: dict[str, set[str]] = {
    "cases": set(),
    "infra": {"cases"},
    **{c: {"cases", "infra"} for c in CHANNELS | SURFACES},
    "workers": {"cases", "infra", *CHANNELS},  # the workers call a channel's sender
    "lineadiretta": {"cases", "infra", "workers", *CHANNELS, *SURFACES},
}
FRAMEWORKS = {"flask", "werkzeug", "twilio", "celery", "kombu", "redis", "flask_wtf"}


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield package, path, ast.parse(path.read_text(), str(path))


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""] if node.level == 0 else []


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_the_floors_below_it(package: str) -> None:
    wrong = []
    for pkg, path, tree in _modules():
        if pkg != package:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node):
                top = name.split(".")[0]
                ours = top in MAY_IMPORT and top != package
                if (ours and top not in MAY_IMPORT[package]) or (
                    package == "cases" and top in FRAMEWORKS
                ):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert wrong == []


def test_every_import_stands_at_module_top() -> None:
    """An import inside a function hides a dependency (it was how the cycles were hidden)."""
    inside = []
    for _, path, tree in _modules():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        inside.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert inside == []


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def test_no_module_of_ours_imports_itself_back_through_others() -> None:
    """No cycle among the modules (within a package as much as between packages)."""
    trees = {_module_name(path): tree for _, path, tree in _modules()}
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(_imported(node))
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                # `from ivr import flow` imports the module ivr.flow
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in trees and d != name}
    on_path: list[str] = []
    done: set[str] = set()

    def visit(n: str) -> list[str] | None:
        on_path.append(n)
        for d in sorted(graph[n]):
            if d in on_path:
                return [*on_path[on_path.index(d) :], d]
            if d not in done:
                found = visit(d)
                if found:
                    return found
        on_path.pop()
        done.add(n)
        return None

    for n in sorted(graph):
        if n not in done:
            cycle = visit(n)
            assert cycle is None, " -> ".join(cycle)


def test_opt_out_is_read_and_written_in_one_place() -> None:
    """A rule about the citizen, not about SMS: only cases/optout.py touches its table."""
    elsewhere = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for _, path, tree in _modules()
        if path.relative_to(ROOT).as_posix() not in ("cases/optout.py", "cases/models.py")
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id == "OptOut"
    ]
    assert elsewhere == []


def test_an_outbox_row_moves_only_through_cases_outbox() -> None:
    """Texts and e-mails are created waiting (or suppressed) where they are written; every
    later change of status is a named move of cases/outbox.py, checked against its table."""

    def outbox_status(value: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id == "OutboxStatus" for n in ast.walk(value))

    moves = []
    for _, path, tree in _modules():
        if path.relative_to(ROOT).as_posix() in ("cases/outbox.py", "cases/models.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                created = isinstance(node.func, ast.Name) and node.func.id in (
                    "OutboxMessage",
                    "EmailMessage",
                )
                if not created and any(
                    k.arg == "status" and outbox_status(k.value) for k in node.keywords
                ):
                    moves.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif (
                isinstance(node, ast.Assign)
                and outbox_status(node.value)
                and any(isinstance(t, ast.Attribute) and t.attr == "status" for t in node.targets)
            ):
                moves.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert moves == []


def test_a_case_is_written_only_by_registration() -> None:
    """Every channel registers through cases.registration.register: nothing else numbers a
    case (`next_number`, `write_case`) or builds the one-statement registration."""
    own = {"cases/registration.py", "cases/protocol.py", "cases/onestatement.py"}
    writers = {"next_number", "write_case", "statement", "json_row", "prepare_case"}
    elsewhere = [
        f"{path.relative_to(ROOT)}:{node.lineno} {name}"
        for _, path, tree in _modules()
        if path.relative_to(ROOT).as_posix() not in own
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module in ("cases.registration", "cases.protocol", "cases.onestatement")
        for name in (a.name for a in node.names)
        if name in writers
    ]
    assert elsewhere == []


def test_the_database_driver_is_used_in_the_database_plumbing_only() -> None:
    """Raw psycopg (connections, its errors) lives in cases/db.py, beside the engine."""
    users = sorted(
        path.relative_to(ROOT).as_posix()
        for _, path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(name.split(".")[0] == "psycopg" for name in _imported(node))
    )
    assert users == ["cases/db.py"]


def test_work_for_the_workers_is_noted_in_one_place() -> None:
    """What a commit hands to the workers is kept in Session.info by cases/handoff.py only."""
    elsewhere = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for _, path, tree in _modules()
        if path.relative_to(ROOT).as_posix() != "cases/handoff.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "info"
        and isinstance(node.value, ast.Name)
        and node.value.id in ("s", "session")
    ]
    assert elsewhere == []


def test_the_time_is_read_from_the_clock_the_app_is_given() -> None:
    """Above the domain, nothing reads the wall clock itself: `runtime().clock` (the domain is
    handed the time in its Ctx)."""
    own = ("infra/runtime.py", "lineadiretta/app.py", "cases/clock.py")  # where the default is
    reads = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for _, path, tree in _modules()
        if path.relative_to(ROOT).as_posix() not in own
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id == "utcnow"
    ]
    assert reads == []
