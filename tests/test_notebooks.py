"""Lesson conventions (outputs cleared, setup first, check cells, exercises, no functions), checked on the
committed notebooks without running them.

Running them is nbval's job: the README's test command executes every notebook in notebooks/.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_is_committed_clean_and_follows_the_conventions(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not cleared"
    assert "lesson.setup(" in code[0].source, f"{path.name}: first code cell must call lesson.setup()"
    assert any("assert " in c.source or "lesson.check(" in c.source for c in code), f"{path.name}: no check cell"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Exercises" in markdown, f"{path.name}: no exercises section"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in code:  # reusable code belongs in xdlearn, not in a lesson
        assert "\ndef " not in "\n" + cell.source or "# for teaching" in cell.source.lower(), \
            f"{path.name}: define functions in xdlearn/, not in the notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_is_valid_python(path):
    """Catches prose pasted into a code cell before a long run does."""
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            lines = [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
            compile("\n".join(lines), f"{path.name} cell {index}", "exec")


def test_readme_lists_every_lesson():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    missing = [p.stem for p in NOTEBOOKS if f"`{p.stem}`" not in readme]
    assert not missing, f"README's lesson table does not list {missing}"


def test_code_you_may_have_seen_quotes_every_broken_pattern_and_runs_none_that_cannot_run():
    """The page quotes each broken fragment in a markdown code block; the two that need what this project does not
    have (``torchtext.legacy``, a ``torch.hub`` download) appear in no code cell, which nbval would run."""
    nb = nbformat.read(Path(__file__).parent.parent / "notebooks" / "code_you_may_have_seen.ipynb", as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    quoted = "\n".join(re.findall(r"```python\n(.*?)```", markdown, flags=re.S))
    for fragment in ("from torchtext.legacy import data", "BucketIterator", "torch.hub.load(", "model.eval()",
                     "with torch.no_grad():", "load_state_dict(teacher.state_dict())"):
        assert fragment in quoted, f"the page does not quote {fragment!r}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for unrunnable in ("from torchtext", "import torchtext", "torch.hub.load("):
        assert unrunnable not in code, f"a code cell runs {unrunnable!r}"
