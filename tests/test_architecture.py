"""The package's folders are its layers: no import circle, nothing imports the command line, and every import
points down the layer order that docs/architecture.md draws.

The graph is read from the source (every ``import`` and ``from … import``, at module level or inside a
function, ``TYPE_CHECKING`` blocks included), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import airflow_provider_duckling

PACKAGE = "airflow_provider_duckling"
SOURCE = Path(airflow_provider_duckling.__file__).parent

#: Top to bottom. A module may import from its own folder or from a folder on a lower line, never upward.
#: The root's modules (the package's ``__init__``, ``provider_info`` and the deprecated 0.1 paths) sit on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "cli", "demo"),
    ("plugins",),
    ("scheduling",),
    ("operators",),
    ("health",),
    ("transfer",),
    ("hooks",),
    ("access",),
    ("assets", "links", "notifications", "timetables"),
    ("registry",),
    ("domain",),
    ("common",),
)
LAYER_OF = {folder: rank for rank, folders in enumerate(LAYERS) for folder in folders}


def module_name(path: Path, source: Path = SOURCE) -> str:
    parts = path.relative_to(source.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    files = {module_name(p, source): p for p in source.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in files else module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def folder(module: str) -> str:
    """The top folder of a package module (``""`` for the root's own modules)."""
    parts = module.split(".")
    if len(parts) == 2 and (SOURCE / f"{parts[1]}.py").exists():
        return ""
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points to the same or a higher layer in another folder, as ``a -> b``."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            here, there = folder(module), folder(target)
            if here != there and LAYER_OF[here] >= LAYER_OF[there]:
                wrong.append(f"{module} -> {target}")
    return wrong


def test_every_folder_has_a_layer():
    folders = {folder(m) for m in import_graph()}
    assert folders - set(LAYER_OF) == set(), "a new folder needs its line in LAYERS (and in docs/architecture.md)"
    assert {"cli", "scheduling", "health", "transfer", "domain", "common"} <= folders


def test_the_package_has_no_import_circle():
    assert circles(import_graph()) == []


def test_no_library_module_imports_the_command_line():
    graph = import_graph()
    library = {m: targets for m, targets in graph.items() if folder(m) != "cli"}
    assert [f"{m} -> {t}" for m, targets in sorted(library.items()) for t in sorted(targets) if folder(t) == "cli"] == []
    assert any(folder(t) != "cli" for t in graph[f"{PACKAGE}.cli.verify"]), "cli/ is a layer over the library"


def test_every_import_points_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The checks above would fail on the circle issue 20 found (``dag_factory`` → ``discovery`` →
    ``dag_factory``) and on a library module importing ``cli/``: planted in a copy of the package."""
    copy = tmp_path / PACKAGE
    for path in SOURCE.rglob("*.py"):
        target = copy / path.relative_to(SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    discovery = copy / "scheduling" / "discovery.py"
    discovery.write_text(discovery.read_text() + f"\nfrom {PACKAGE}.scheduling.dag_factory import build_dags\n")
    reconcile = copy / "health" / "reconcile.py"
    reconcile.write_text(reconcile.read_text() + f"\n\ndef _late():\n    from {PACKAGE}.cli import verify\n")
    graph = import_graph(copy)
    assert [f"{PACKAGE}.scheduling.dag_factory", f"{PACKAGE}.scheduling.discovery"] in circles(graph)
    assert f"{PACKAGE}.health.reconcile -> {PACKAGE}.cli.verify" in upward_imports(graph)


@pytest.mark.parametrize("old, new", [
    ("dag_factory", "scheduling.dag_factory"),
    ("ops_dags", "scheduling.ops_dags"),
])
def test_the_01_dag_file_entry_points_still_import_and_warn(old, new):
    import importlib
    import sys
    import warnings

    moved = importlib.import_module(f"{PACKAGE}.{new}")  # first: importing Airflow re-routes warnings to logging
    sys.modules.pop(f"{PACKAGE}.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shim = importlib.import_module(f"{PACKAGE}.{old}")
    builder = "build_dags" if old == "dag_factory" else "build_ops_dags"
    assert getattr(shim, builder) is getattr(moved, builder)
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == [
        f"{PACKAGE}.{old} moved to {PACKAGE}.{new}: change the import in your DAG file"
    ]


def test_dag_versions_serialized_before_the_move_still_deserialize():
    """A deployment upgraded from 0.1 keeps DAG versions whose JSON names the timetable and the priority
    strategy by their old paths; Airflow finds registered classes by exactly that string (the plugin)."""
    import datetime as dt
    import json

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider_duckling.scheduling.priority import RecentDaysFirst
    from airflow_provider_duckling.timetables import DailyCronDataIntervalTimetable

    with DAG("duckling_events_backfill_team_1", schedule=DailyCronDataIntervalTimetable("0 0 * * *", "UTC"),
             start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) as dag:
        EmptyOperator(task_id="export", weight_rule=RecentDaysFirst())
    text = json.dumps(DagSerialization.to_dict(dag))
    new_paths = (f"{PACKAGE}.timetables.daily.DailyCronDataIntervalTimetable",
                 f"{PACKAGE}.scheduling.priority.RecentDaysFirst")
    assert all(path in text for path in new_paths)
    old = text.replace(new_paths[0], f"{PACKAGE}.timetables.DailyCronDataIntervalTimetable").replace(
        new_paths[1], f"{PACKAGE}.priority.RecentDaysFirst")
    restored = DagSerialization.from_dict(json.loads(old))
    assert isinstance(restored.timetable, DailyCronDataIntervalTimetable)
    assert isinstance(restored.get_task("export").weight_rule, RecentDaysFirst)
