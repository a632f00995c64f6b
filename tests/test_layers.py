"""The floors of docs/architecture.md, pinned: imports flow down only, and each library has one module.

Each rule is a function over the import graph (module -> what it imports), read from the source
files with `ast`, function-level imports included. The real graph breaks no rule; the graph as the
layering review found it (cli reaching into ledger, app importing the web layer...) breaks each.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import digest

PACKAGE = Path(digest.__file__).parent
Graph = dict[str, set[str]]  # "store" -> {"database", "domain", ..., "sqlalchemy"}

CORE = {"domain", "errors"}
ADAPTERS = {
    "addresses", "config", "database", "inbound", "ingest", "ledger", "logs", "mailer", "mime",
    "models", "notices", "ratelimit",
    "render", "rows", "sources", "store", "subscriber_csv", "text", "timezones", "tokens",
}  # fmt: skip
PIPELINE = {"dispatch", "feeds", "metrics"}
EDGES = {
    "cli", "daemon", "pages", "readers", "reports", "scheduler", "sending_process", "stopping", "web",
    "webhooks", "demo", "inbound_smtp",
}  # fmt: skip
WEB = {"web", "pages", "webhooks", "daemon", "demo.pages"}  # the modules that may import Starlette
# Each of these libraries is imported by its one module of ours, and no other; aiosmtpd by two
# edges, the demo's SMTP catcher and `digest serve`'s inbound SMTP.
ONE_MODULE: dict[str, str | tuple[str, ...]] = {
    "aiosmtplib": "mailer",
    "aiosmtpd": ("demo.catcher", "inbound_smtp"),
    "alembic": "database",
    "apscheduler": "scheduler",
    "css_inline": "render",
    "email_validator": "addresses",
    "feedparser": "ingest",
    "flufl": "inbound",
    "httpx": "sources",
    "inscriptis": "render",
    "itsdangerous": "tokens",
    "prometheus_client": "metrics",
    "rich": "reports",
    "typer": "cli",
    "uvicorn": "daemon",
}
# The CLI parses, makes one Services call and prints; beside app and the nouns it may start the
# other two long-running edges (`serve`, `demo`) and stop a send on a signal.
CLI_MAY_IMPORT = {"app", "domain", "errors", "config", "reports", "daemon", "demo", "stopping"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> set[str]:
    """Our modules without the `digest.` prefix; other packages by their top-level name."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [f"digest.{alias.name}" for alias in node.names]
                if node.module == "digest"
                else [node.module]
            )
        else:
            continue
        for name in names:
            if name.startswith("digest."):
                found.add(name.removeprefix("digest."))
            elif name.split(".")[0] not in sys.stdlib_module_names and name != "__future__":
                found.add(name.split(".")[0])
    return found


@functools.cache
def import_graph() -> Graph:
    """Read once a session: CPython 3.11.7's ast.parse can fail with "AST constructor recursion
    depth mismatch" (a CPython 3.11 bug in its AST state), so the fewer parses, the better."""
    return {
        _name(path): _imports(ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts  # Alembic's scripts belong to database.py
    }


def _floor(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def core_imports_nothing_of_ours(graph: Graph) -> list[str]:
    return [f"{m} imports {i}" for m in CORE for i in graph.get(m, set()) & set(graph)]


def adapters_never_import_the_pipeline_app_or_an_edge(graph: Graph) -> list[str]:
    above = PIPELINE | EDGES | {"app"}
    return [f"{m} imports {i}" for m in ADAPTERS for i in graph.get(m, set()) if _floor(i) in above]


def the_pipeline_never_imports_app_or_an_edge(graph: Graph) -> list[str]:
    return [
        f"{m} imports {i}"
        for m in PIPELINE
        for i in graph.get(m, set())
        if _floor(i) in EDGES | {"app"}
    ]


def app_knows_no_edge(graph: Graph) -> list[str]:
    return [
        f"app imports {i}"
        for i in graph.get("app", set())
        if _floor(i) in EDGES | {"starlette", "typer", "uvicorn"}
    ]


def the_store_never_reads_the_ledger(graph: Graph) -> list[str]:
    return ["store imports ledger"] if "ledger" in graph.get("store", set()) else []


def the_cli_goes_through_app(graph: Graph) -> list[str]:
    ours = graph.get("cli", set()) & set(graph)
    return [f"cli imports {i}" for i in sorted(ours - CLI_MAY_IMPORT)]


def only_the_web_modules_import_starlette(graph: Graph) -> list[str]:
    return [f"{m} imports starlette" for m, i in graph.items() if "starlette" in i and m not in WEB]


def each_library_has_its_one_module(graph: Graph) -> list[str]:
    owners = {
        library: (owner,) if isinstance(owner, str) else owner
        for library, owner in ONE_MODULE.items()
    }
    return [
        f"{m} imports {library} (only {' or '.join(owner)} may)"
        for library, owner in owners.items()
        for m, imported in graph.items()
        if library in imported and m not in owner
    ]


RULES: list[Callable[[Graph], list[str]]] = [
    core_imports_nothing_of_ours,
    adapters_never_import_the_pipeline_app_or_an_edge,
    the_pipeline_never_imports_app_or_an_edge,
    app_knows_no_edge,
    the_store_never_reads_the_ledger,
    the_cli_goes_through_app,
    only_the_web_modules_import_starlette,
    each_library_has_its_one_module,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_the_code_keeps_the_rule(rule: Callable[[Graph], list[str]]) -> None:
    assert rule(import_graph()) == []


def test_the_graph_is_read_whole_function_level_imports_included() -> None:
    graph = import_graph()
    assert {"domain", "app", "cli", "demo", "demo.catcher", "store", "ledger"} <= set(graph)
    assert "typer" in graph["cli"] and "app" in graph["cli"]
    tree = ast.parse("def later() -> None:\n    from digest import ledger\n    import httpx\n")
    assert _imports(tree) == {"ledger", "httpx"}


# Imports the layering review found (and a few like them); each one breaks one rule.
BREACHES = [
    ("cli", "ledger", the_cli_goes_through_app),
    ("cli", "mailer", the_cli_goes_through_app),
    ("cli", "render", the_cli_goes_through_app),
    ("cli", "dispatch", the_cli_goes_through_app),
    ("app", "pages", app_knows_no_edge),
    ("app", "starlette", app_knows_no_edge),
    ("feeds", "scheduler", the_pipeline_never_imports_app_or_an_edge),
    ("readers", "starlette", only_the_web_modules_import_starlette),
    ("store", "ledger", the_store_never_reads_the_ledger),
    ("metrics", "app", the_pipeline_never_imports_app_or_an_edge),
    ("render", "dispatch", adapters_never_import_the_pipeline_app_or_an_edge),
    ("ledger", "app", adapters_never_import_the_pipeline_app_or_an_edge),
    ("mailer", "demo.catcher", adapters_never_import_the_pipeline_app_or_an_edge),
    ("domain", "errors", core_imports_nothing_of_ours),
    ("errors", "domain", core_imports_nothing_of_ours),
    ("reports", "httpx", each_library_has_its_one_module),
    ("web", "typer", each_library_has_its_one_module),
    ("mailer", "aiosmtpd", each_library_has_its_one_module),
]


@pytest.mark.parametrize(
    ("module", "imported", "rule"), BREACHES, ids=[f"{m}->{i}" for m, i, _ in BREACHES]
)
def test_an_import_across_the_floors_breaks_its_rule(
    module: str, imported: str, rule: Callable[[Graph], list[str]]
) -> None:
    graph = dict(import_graph())  # a copy: the real graph is read once and shared
    graph[module] = graph[module] | {imported}
    assert rule(graph) != []
