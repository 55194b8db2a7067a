"""The layering of the package, checked by import-linter's contracts in pyproject.toml (lazy imports inside
functions count), plus what import-linter cannot see: every module belongs to a layer, and serve_app.py (a
single module, not a package) imports nothing from the entry points above it."""

from __future__ import annotations

import ast
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import tomllib
from importlinter.cli import lint_imports

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]

# serve_app's one import from orchestrator.ops: its Serve application builder resolves the store with
# orchestrator.ops.instance.resolve_store, and ops.instance.deploy_serve imports serve_app to build the app
# (a cycle through lazy imports). To go when the HTTP layer's rewrite moves the builder or the resolver.
SERVE_APP_KNOWN = {"orchestrator.ops.instance"}


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    out = io.StringIO()
    with redirect_stdout(out):
        code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert code == 0, out.getvalue()


def _modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def test_every_module_belongs_to_a_layer() -> None:
    (layers,) = [c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers"]
    members = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    loose = [
        m
        for m in _modules("orchestrator") + _modules("actors")
        if m not in ("orchestrator", "orchestrator.__init__")
        and not any(m == x or m.startswith(x + ".") for x in members)
    ]
    assert not loose, f"modules in no layer of pyproject.toml's [tool.importlinter] layers contract: {loose}"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # every import, lazy ones inside functions too
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_serve_app_imports_no_entry_point() -> None:
    upper = sorted(
        n
        for n in _imports(ROOT / "serve_app.py")
        if n.startswith(("orchestrator.cli", "orchestrator.ops", "orchestrator.__main__"))
        and not any(n == k or n.startswith(k + ".") for k in SERVE_APP_KNOWN)
    )
    assert not upper, f"serve_app imports from the layers above it: {upper}"
