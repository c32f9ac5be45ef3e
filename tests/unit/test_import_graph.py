"""The house's import rules, read from the source (every import statement, also those inside functions).

Entry points / CLI -> training -> data_efficiency / data / model -> tokenizer / config. `megatron.config`
imports nothing from training or the CLI; `megatron.training` never imports the CLI (`megatron.arguments`,
`megatron.cli`), the family specs or the inference loader; the library layers never import training; no
cycle between modules; no code executes a script from its path.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "megatron"
UPPER = ("megatron.arguments", "megatron.cli", "megatron.specs", "megatron.inference")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the megatron modules `path` imports anywhere in its body."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("megatron"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("megatron"):
                continue
            for alias in node.names:  # `from megatron.config import bridge` imports a module too
                candidate = f"{target}.{alias.name}"
                out.add(candidate if _exists(candidate) else target)
    return out


def _exists(module: str) -> bool:
    path = REPO.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_layers_import_downwards_only():
    graph = _graph()
    bad = []
    for module, targets in graph.items():
        if _under(module, ("megatron.config",)):
            forbidden = ("megatron.training", "megatron.model", "megatron.data") + UPPER
        elif _under(module, ("megatron.training",)):
            forbidden = UPPER
        elif _under(module, ("megatron.model", "megatron.data", "megatron.data_efficiency", "megatron.tokenizer")):
            forbidden = ("megatron.training",) + UPPER
        else:
            continue
        bad += [f"{module} -> {t}" for t in sorted(targets) if _under(t, forbidden)]
    assert not bad, "imports running back up the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_training_core_names_no_model_family():
    for path in sorted((PACKAGE / "training").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))}
        code_strings = [s for s in strings if s not in docstrings and not s.startswith(("``", "`"))]
        assert not [s for s in code_strings if s.lower() in ("gpt", "bert", "encoder", "decoder")], path
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {"model_type", "GPTModel", "BertModel", "gpt_flops_per_token"} & names, path


def test_no_script_is_executed_from_its_path():
    offenders = []
    for path in sorted(list(PACKAGE.rglob("*.py")) + list((REPO / "tools").glob("*.py")) + [REPO / "pretrain_gpt.py"]):
        if "spec_from_file_location" in path.read_text(encoding="utf-8"):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
