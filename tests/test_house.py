"""The house rules, checked: files of at most 600 lines, imports that run one way,
every primitive lowered by every target, backends that name no loss or optimizer,
no dead code (vulture), and no reference to a file the repository does not hold."""
from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "modelc"
LINE_BUDGET = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def test_no_module_over_the_line_budget():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > LINE_BUDGET}
    assert long == {}


def _imports(name: str, path: Path) -> set[str]:
    """Every package module `name` imports, at module or function level, with the parent
    packages each import runs (except `name`'s own, which are loaded before it)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                candidate = ".".join(parts[:i])
                if candidate in MODULES:
                    found.add(candidate)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}
    return found - ancestors - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_run_one_way():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize("layer, forbidden", [
    ("modelc.compiler.ir", ("modelc.compiler.primitives", "modelc.compiler.catalog", "modelc.compiler.codegen")),
    ("modelc.errors", ("modelc.grammar",)),
])
def test_lower_layers_import_nothing_above_them(layer, forbidden):
    imported = _imports(layer, MODULES[layer])
    assert {m for m in imported if m.startswith(forbidden)} == set()


def test_backends_import_no_user_facing_module():
    user_facing = ("modelc.cli", "modelc.doctor", "modelc.losses", "modelc.runtime")
    for name, path in MODULES.items():
        if name.startswith("modelc.compiler.codegen"):
            assert {m for m in _imports(name, path) if m.startswith(user_facing)} == set(), name


def _code_tokens(path: Path) -> set[str]:
    """Names and strings in a file's code (not its comments or docstrings)."""
    words: set[str] = set()
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.update(re.findall(r"[A-Za-z_]+", node.value))
    return words


def test_backends_name_no_loss_or_optimizer():
    from modelc.compiler.catalog import LOSS_ALIASES, LOSSES, METRICS, OPTIMIZERS
    names = set(LOSSES) | set(LOSS_ALIASES) | set(OPTIMIZERS) | {f"{n}_update" for n in OPTIMIZERS}
    names |= {n for n in METRICS if n not in ("mae", "mse")} | {"adam", "sgd", "rmsprop"}
    for path in sorted((PACKAGE / "compiler" / "codegen").glob("*.py")):
        assert _code_tokens(path) & names == set(), path.name


def test_every_primitive_has_a_lowering_in_every_target():
    from modelc.compiler.codegen.cpu_lower import LOWERINGS as CPU
    from modelc.compiler.codegen.cuda_rules import LOWERINGS as CUDA
    from modelc.compiler.primitives import PRIMITIVES
    assert all(callable(p.impl) for p in PRIMITIVES.values())      # the numpy target runs impl
    assert set(PRIMITIVES) - set(CPU) == set()
    assert set(PRIMITIVES) - set(CUDA) == set()


@pytest.mark.skipif(shutil.which("vulture") is None and not (Path(sys.executable).parent / "vulture").exists(),
                    reason="vulture is not installed (the dev extra brings it)")
def test_no_dead_code():
    exe = shutil.which("vulture") or str(Path(sys.executable).parent / "vulture")
    result = subprocess.run([exe, "--min-confidence", "80", str(PACKAGE)], capture_output=True, text=True)
    assert result.stdout == "" and result.returncode == 0, result.stdout


_FILE = re.compile(r"(?<![\w<{*-])([\w./-]*[\w-]\.(?:md|py|lark|model|toml))\b")


def _comments_and_docs(path: Path) -> str:
    text = path.read_text()
    if path.suffix != ".py":
        return re.sub(r"```.*?```", "", text, flags=re.S)     # commands shown in examples
    parts = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.string.startswith(('"""', "'''"))):
            parts.append(tok.string)
    return "\n".join(parts)


def test_no_reference_to_a_missing_file():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    names = {Path(t).name for t in tracked} | set(tracked)
    generated = ("model.weights.h5", "config.json", "metadata.json")   # inside files users bring
    missing = []
    for rel in tracked:
        if not rel.endswith((".py", ".md")) or rel.startswith("bench/RESULTS"):
            continue
        for ref in _FILE.findall(_comments_and_docs(ROOT / rel)):
            ref = ref.strip("./")
            if ref in names or Path(ref).name in names or ref.endswith(generated):
                continue
            if ref.endswith((".model", ".toml")) and "/" not in ref:   # a user's file in an example
                continue
            if re.match(r"^(\w+\.)+(py|md)$", ref) and ref.count(".") > 1:   # a dotted module name
                continue
            missing.append(f"{rel}: {ref}")
    assert missing == []
