import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "realuid_lightning"
FILES = sorted(SRC.rglob("*.py"))


def code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of a function that are neither blank, comments nor its docstring."""
    body = node.body[1:] if ast.get_docstring(node) else node.body
    if not body:
        return 0
    lines = source[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_sizes_are_capped(path):
    """No file over 300 lines, no function over 25 code lines."""
    source = path.read_text().splitlines()
    assert len(source) <= 300, f"{path.name} has {len(source)} lines"
    for node in ast.walk(ast.parse("\n".join(source))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert code_lines(node, source) <= 25, f"{path.name}:{node.name} has {code_lines(node, source)} code lines"


def test_training_step_fits_on_one_screen():
    """RealUIDModule.training_step stays within 40 lines."""
    tree = ast.parse((SRC / "modules" / "distill.py").read_text())
    step = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "training_step")
    assert step.end_lineno - step.lineno + 1 <= 40


@pytest.mark.parametrize(
    "path", [SRC / "losses.py", SRC / "objective.py", *sorted((SRC / "processes").glob("*.py"))], ids=lambda p: p.name
)
def test_public_docstrings_state_their_equation(path):
    """Every public function and class in the losses and processes has a docstring with an equation."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            doc = ast.get_docstring(node) or ""
            if isinstance(node, ast.FunctionDef) and node.name in (
                "sample_t",
                "sample_source",
                "weight",
                "expand_like",
            ):
                assert doc, f"{path.name}:{node.name} has no docstring"
                continue
            assert "=" in doc or "math::" in doc, f"{path.name}:{node.name} docstring gives no equation"


def test_no_kwargs_swallowing():
    """No **kwargs / **extras in the library: conditioning is a typed argument."""
    for path in FILES:
        assert "**kwargs" not in path.read_text() and "**extras" not in path.read_text(), path.name
