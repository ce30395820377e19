"""Dependencies between the service's layers point one way (docs/design.md, "Layers").

Read from the source (AST), not by importing: every `import` in `app/`,
wherever it sits (a function body or a TYPE_CHECKING block counts too), is
checked against the layer order below. A module may import modules of its
own package and of lower layers, never of a higher layer or of a sibling
of the same rank. `app` may import only the `training` modules listed in
`TRAINING_FOR_APP`, and `training` never imports `app`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Rank of each package of `app`: lower layers first. Equal ranks are siblings that may not import each other.
LAYERS: dict[str, int] = {
    "app.core": 0,  # settings, errors, keys, logging, metrics: imports no other layer
    "app.inference": 1,  # the inference process and the API's handle on it
    "app.datasets": 1,  # uploaded datasets and their reports on disk
    "app.reports": 1,  # version report charts drawn in a child process
    "app.ledger": 1,  # the forecast ledger: served forecasts kept, scored, reported (pure and storage)
    "app.serving": 2,  # the registry, micro-batching and the protocol-neutral forecast core
    "app.jobs": 2,  # training jobs, their queue and stores
    "app.shadow": 2,  # the shadow challenger's forecasts, its network in a child process
    "app.online": 3,  # the ledger in the running service: scoring after appends, adaptive bands
    "app.schedules": 3,  # retraining schedules: their store, their slots and the tick that submits jobs
    "app.api": 4,  # everything that knows HTTP
    "app.main": 5,  # entry points: the app factory and the commands
    "app.__main__": 5,
    "app.worker": 5,
    "app": 5,
}

# What the service takes from the training package: preprocessing, the store, the gate and the runs it starts.
TRAINING_FOR_APP = frozenset(
    {
        "training",
        "training.artifact",
        "training.baselines",
        "training.calendars",
        "training.cli",
        "training.config",
        "training.conformal",
        "training.data",
        "training.data_report",
        "training.errors",
        "training.features",
        "training.files",
        "training.fitting",
        "training.gate",
        "training.object_store",
        "training.onnx_backfill",
        "training.onnx_export",
        "training.promotion",
        "training.remote_store",
        "training.significance",
        "training.spec",
        "training.store",
        "training.threads",
        "training.version_report",
    }
)


def module_name(path: Path, root: Path) -> str:
    """`app/api/gateway.py` -> `app.api.gateway`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in a file, relative ones resolved; `from x import y` gives x.y."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def layer_of(module: str) -> str | None:
    """The `LAYERS` key a module of `app` belongs to (its longest matching prefix)."""
    candidates = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(candidates, key=len) if candidates else None


def app_violations(root: Path) -> list[str]:
    """Every import in `root/app` that breaks the layer order or reaches an unlisted training module."""
    problems = []
    for path in sorted((root / "app").rglob("*.py")):
        module = module_name(path, root)
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: its package has no layer; add it to LAYERS")
            continue
        for line, imported in imports_of(path, module):
            where = f"{path.relative_to(root)}:{line}"
            if imported == "app" or imported.startswith("app."):
                target = layer_of(imported)
                if target is None:
                    problems.append(f"{where}: {module} imports {imported}, which has no layer")
                elif target != layer and LAYERS[target] >= LAYERS[layer]:
                    problems.append(f"{where}: {module} ({layer}) imports {imported} ({target}), a higher layer")
            # `from training import gate` names a module; `from training.gate import skill_of` a name in one.
            elif imported.split(".")[0] == "training" and ".".join(imported.split(".")[:2]) not in TRAINING_FOR_APP:
                problems.append(f"{where}: {module} imports {imported}, not in TRAINING_FOR_APP")
    return problems


def training_violations(root: Path) -> list[str]:
    """Every import of `app` in `root/training`."""
    problems = []
    for path in sorted((root / "training").rglob("*.py")):
        module = module_name(path, root)
        for line, imported in imports_of(path, module):
            if imported == "app" or imported.startswith("app."):
                problems.append(f"{path.relative_to(root)}:{line}: {module} imports {imported}")
    return problems


def test_no_layer_of_app_imports_a_higher_one() -> None:
    assert app_violations(ROOT) == []


def test_training_never_imports_app() -> None:
    assert training_violations(ROOT) == []


def test_the_rule_sees_a_domain_module_importing_http_types(tmp_path: Path) -> None:
    """The check itself: a serving module importing the API, or an unlisted training module, is reported."""
    (tmp_path / "app" / "serving").mkdir(parents=True)
    (tmp_path / "app" / "serving" / "bad.py").write_text(
        "from app.api.schemas import PriceRow\nfrom . import registry\nfrom training import models\n"
    )
    problems = app_violations(tmp_path)
    assert len(problems) == 2, problems
    assert "app.serving.bad (app.serving) imports app.api.schemas.PriceRow (app.api), a higher layer" in problems[0]
    assert "imports training.models, not in TRAINING_FOR_APP" in problems[1]
