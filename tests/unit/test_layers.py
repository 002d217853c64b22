"""The import layers, read from the source with `ast` (nothing is imported, so no import side
effects). The order is written here, once:

    ple_model                      the model: torch and torchrec only, never pipeline, jobs or Ray
    pipeline.common < data < train < registry < score < retrain < report
                                   a room imports from its own and lower rooms, never higher ones
    jobs                           entry points: anything, but no torchrec at module level

"Module level" is what runs at import (function bodies and `if TYPE_CHECKING:` blocks left out),
followed through the project's own modules: `import jobs.score` or `import pipeline.score.run`
on a job's driver must not load torchrec and fbgemm (seconds, and a CUDA build's libraries);
the code that needs the model imports them inside the function that needs it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["common", "data", "train", "registry", "score", "retrain", "report"]
HEAVY = ("torchrec", "fbgemm_gpu")  # what a driver must not import at module level
# The modules each job's driver imports to plan and launch the work.
DRIVER_MODULES = ["pipeline.score.run", "pipeline.train.launch", "pipeline.retrain.daily", "pipeline.report.compare"]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (for `from a.b import c`: a.b.c when that is a module, else a.b)
    line: int
    module_level: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def _walk(node: ast.AST, module_level: bool):
    """(import node, module_level) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, module_level
        elif (
            isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            or isinstance(child, ast.If)
            and _is_type_checking(child)
        ):
            yield from _walk(child, False)
        else:
            yield from _walk(child, module_level)


def read_imports(root: Path, packages: tuple[str, ...] = ("ple_model", "pipeline", "jobs")) -> dict[str, list[Import]]:
    """{module: its imports} for every module of `packages` under `root`."""
    paths = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    out: dict[str, list[Import]] = {}
    for name, path in paths.items():
        imports = []
        is_package = path.name == "__init__.py"
        for node, module_level in _walk(ast.parse(path.read_text(), str(path)), True):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            imports += [Import(name, t, node.lineno, module_level) for t in targets]
        out[name] = imports
    return out


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def layer_violations(imports: dict[str, list[Import]]) -> list[str]:
    problems = []
    for module, found in imports.items():
        top = module.split(".")[0]
        if top == "pipeline" and module != "pipeline" and room(module) not in LAYERS:
            problems.append(f"{module}: not in a room of the layer order {LAYERS} (add its room there)")
        for imp in found:
            target_top = imp.target.split(".")[0]
            where = f"{module}:{imp.line} imports {imp.target}"
            if top == "ple_model" and target_top in ("pipeline", "jobs", "ray"):
                problems.append(f"{where}: ple_model is the model only")
            if top == "pipeline" and target_top == "jobs":
                problems.append(f"{where}: jobs/ are entry points, nothing imports them")
            src, dst = room(module), room(imp.target)
            if src in LAYERS and dst in LAYERS and LAYERS.index(dst) > LAYERS.index(src):
                problems.append(f"{where}: pipeline.{dst} is above pipeline.{src} (order: {' < '.join(LAYERS)})")
    return problems


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def heavy_at_import(imports: dict[str, list[Import]], start: str) -> list[str]:
    """The import chain by which importing `start` loads one of HEAVY, or []."""
    chains = {m: [m] for m in _parents(start)}
    todo = list(chains)
    while todo:
        module = todo.pop()
        for imp in imports.get(module, []):
            if not imp.module_level:
                continue
            chain = chains[module] + [imp.target]
            if imp.target.split(".")[0] in HEAVY:
                return chain
            for target in _parents(imp.target):
                if target in imports and target not in chains:
                    chains[target] = chain
                    todo.append(target)
    return []


@pytest.fixture(scope="module")
def imports() -> dict[str, list[Import]]:
    return read_imports(REPO)


def test_no_module_imports_a_layer_above_its_own(imports):
    assert "pipeline.score.run" in imports and "ple_model.ple" in imports  # the tree was read
    assert layer_violations(imports) == []


@pytest.mark.parametrize("start", [*DRIVER_MODULES, "pipeline.score", "pipeline.data.files"])
def test_drivers_do_not_load_torchrec_at_import(imports, start):
    assert heavy_at_import(imports, start) == []


def test_jobs_do_not_load_torchrec_at_import(imports):
    jobs = [m for m in imports if m.startswith("jobs.")]
    assert len(jobs) >= 7
    assert {job: chain for job in jobs if (chain := heavy_at_import(imports, job))} == {}


def test_room_init_files_import_nothing(imports):
    for name in ["pipeline", *(f"pipeline.{r}" for r in LAYERS)]:
        assert name in imports, f"{name} has no __init__.py"
        assert imports[name] == [], f"{name}/__init__.py imports {[i.target for i in imports[name]]}: keep it light"


# -- the checker itself catches what it is for --------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, list[Import]]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return read_imports(tmp_path)


def test_an_upward_import_is_reported_even_inside_a_function(tmp_path):
    found = _tree(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/data/__init__.py": "",
            "pipeline/score/__init__.py": "",
            "pipeline/score/run.py": "X = 1\n",
            "pipeline/data/reader.py": "def f():\n    from pipeline.score.run import X\n",
            "pipeline/data/collate.py": "from ..score import run\n",  # relative, module level
            "ple_model/__init__.py": "import ray\n",
        },
    )
    problems = layer_violations(found)
    assert any(p.startswith("pipeline.data.reader:2 imports pipeline.score.run") for p in problems), problems
    assert any(p.startswith("pipeline.data.collate:1 imports pipeline.score.run") for p in problems), problems
    assert any("ple_model is the model only" in p for p in problems), problems


def test_torchrec_reached_through_another_module_is_reported(tmp_path):
    found = _tree(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/data/__init__.py": "",
            "pipeline/data/batch.py": "from torchrec.sparse.jagged_tensor import KeyedJaggedTensor\n",
            "pipeline/data/reader.py": "from pipeline.data.batch import KeyedJaggedTensor\n",
            "pipeline/data/lazy.py": "def f():\n    import torchrec\n",
            "jobs/__init__.py": "",
            "jobs/score.py": "import pipeline.data.reader\nimport pipeline.data.lazy\n",
        },
    )
    assert heavy_at_import(found, "jobs.score") == [
        "jobs.score",
        "pipeline.data.reader",
        "pipeline.data.batch",
        "torchrec.sparse.jagged_tensor",
    ]
    assert heavy_at_import(found, "pipeline.data.lazy") == []
