"""The layers stay visible in the folders: an import rule per layer, read from the source with ast.

functions/rostersync/
  domain/    pure rules and data (and domain/sources/: the sources' pure translation)
  app/       the handlers (service layer), which reach the world only through ports
  adapters/  Firestore, Classroom, Pub/Sub, Secret Manager, Cloud Storage, Clever, OneRoster
  admin/     the CLI, its views, the dry run, the status page
  (top)      config, wiring (the composition root), logs, privacy, retry, optimistic
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "rostersync"
LAYERS = ("domain", "app", "adapters", "admin")
# What each layer may not import (anything at the top, like retry or privacy, any layer may use;
# wiring.py, at the top, builds everything, and no layer imports it but admin's entry points).
FORBIDDEN = {
    "domain": {"app", "adapters", "admin", "wiring", "config"},
    "app": {"adapters", "admin", "wiring"},
    "adapters": {"app", "admin", "wiring"},
    "admin": set(),
}
TOP_MAY_NOT = {"optimistic", "retry", "privacy", "logs"}  # the shared helpers import no layer but the domain
EXCEPTIONS: set[tuple[str, str]] = set()  # (module, imported layer) allowed on purpose: none today


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "top"


def imported_modules(path: Path) -> list[str]:
    """Every rostersync module the file imports, at any depth (a lazy import in a function counts)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "rostersync":
                names += [f"rostersync.{a.name}" for a in node.names]
    return [n for n in names if n.startswith("rostersync.")]


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        forbidden = FORBIDDEN.get(layer, set())
        if layer == "top" and path.stem in TOP_MAY_NOT:
            forbidden = {"app", "adapters", "admin", "wiring", "config"}
        module = str(path.relative_to(PACKAGE))
        for name in imported_modules(path):
            target = name.split(".")[1]
            if target in forbidden and (module, target) not in EXCEPTIONS:
                found.append(f"{module} imports {name}")
    return found


def test_every_module_is_in_a_layer_or_a_known_top_level_module():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "config", "wiring", "logs", "privacy", "retry", "optimistic"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


def test_no_layer_imports_what_its_rule_forbids():
    assert violations() == []


def test_the_rule_sees_a_forbidden_import_even_inside_a_function(tmp_path, monkeypatch):
    # The check itself: a domain module reaching for an adapter lazily is reported.
    fake = tmp_path / "rostersync"
    (fake / "domain").mkdir(parents=True)
    (fake / "domain" / "rules.py").write_text("def f():\n    from rostersync.adapters.store import X\n")
    (fake / "app").mkdir()
    (fake / "app" / "applier.py").write_text("from rostersync import wiring\nfrom rostersync.domain import rules\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert violations() == [
        "app/applier.py imports rostersync.wiring",
        "domain/rules.py imports rostersync.adapters.store",
    ]
