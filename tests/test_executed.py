"""The test run keeps the notebooks it executes (``XDLEARN_SAVE_EXECUTED``), and the book builds from them.

A tiny notebook (no model) runs under the README's test command in a subprocess; the notebook lies outside the
checkout, so the checkout's conftest.py is loaded with ``-p conftest``. ``book/build.py --executed`` is tested on
folders it must refuse, which it does before building anything.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# a 1x1 PNG
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
CELLS = {
    "streams": "import sys\nprint('hello')\nsys.stdout.write('one ')\nsys.stdout.flush()\n"
               "_ = sys.stdout.write('two\\n')",
    "image": f"import base64\nfrom IPython.display import Image, clear_output, display\n"
             f"PNG = base64.b64decode({PNG!r})\ndisplay(Image(PNG))",
    "redraw": "for i in range(3):\n    clear_output(wait=True)\n    print('drawing', i)\n    display(Image(PNG))",
    "slider": "import ipywidgets\nslider = ipywidgets.IntSlider(value=7)\ndisplay(slider)",
    "output widget": "out = ipywidgets.Output()\ndisplay(out)\nfor i in range(3):\n    out.clear_output(wait=True)\n"
                     "    with out:\n        print('inside', i)",
    "update": "handle = display('first', display_id=True)\nhandle.update('second')",
    "environment": "import os\nprint('TQDM_DISABLE', os.environ.get('TQDM_DISABLE'))",
    "quiet": "6 * 7;",
    "result": "6 * 7",
}
# run beside the notebook: the pytest process's own environment, after the notebook's kernel has stopped
ENVIRONMENT_TEST = ("import os\n\n\ndef test_the_kernel_variables_are_gone():\n"
                    "    assert 'TQDM_DISABLE' not in os.environ\n")


def notebook(folder: Path, cells: list[str], name: str = "tiny.ipynb") -> Path:
    """A notebook of the given code cells, after a title."""
    nb = new_notebook(cells=[new_markdown_cell("# tiny")] + [new_code_cell(source) for source in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, folder / name)
    return folder / name


def run_tests(folder: Path, *paths: Path, save: Path | None) -> subprocess.CompletedProcess:
    """The README's test command on ``paths``, with this checkout's conftest.py, saving into ``save`` if given."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDLEARN_SAVE_EXECUTED", "TQDM_DISABLE")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])), XDLEARN_QUICK="1")
    if save is not None:
        env["XDLEARN_SAVE_EXECUTED"] = str(save)
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
               "--nbval-lax", "--nbval-current-env", *map(str, paths)]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> nbformat.NotebookNode:
    """The tiny notebook as the test run saved it (the run and a plain test beside it must pass)."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "test_environment.py").write_text(ENVIRONMENT_TEST)
    done = run_tests(folder, notebook(folder, list(CELLS.values())), folder / "test_environment.py",
                     save=folder / "executed")
    assert done.returncode == 0, done.stdout + done.stderr
    path = folder / "executed" / "tiny.ipynb"
    assert path.exists(), f"nothing saved: {sorted(p.name for p in folder.rglob('*'))}"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def outputs(nb: nbformat.NotebookNode, name: str) -> list:
    """The saved outputs of the cell CELLS names."""
    return [c for c in nb.cells if c.cell_type == "code"][list(CELLS).index(name)].outputs


def test_streams_are_merged_and_a_redraw_leaves_only_its_last_drawing(saved):
    assert [(o.output_type, o.name, o.text) for o in outputs(saved, "streams")] == [
        ("stream", "stdout", "hello\none two\n")]
    assert [o.output_type for o in outputs(saved, "image")] == ["display_data"]
    assert outputs(saved, "image")[0].data["image/png"].strip() == PNG
    redraw = outputs(saved, "redraw")
    assert [o.output_type for o in redraw] == ["stream", "display_data"], redraw
    assert redraw[0].text == "drawing 2\n" and "image/png" in redraw[1].data


def test_a_result_has_its_execution_count_unless_hidden_and_a_display_its_update(saved):
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(CELLS) + 1))
    result = outputs(saved, "result")
    assert [(o.output_type, o.execution_count, o.data["text/plain"]) for o in result] == [
        ("execute_result", len(CELLS), "42")]
    assert [o.data["text/plain"] for o in outputs(saved, "update")] == ["'second'"]
    assert outputs(saved, "quiet") == [], "a result the cell's ';' hides is shown"


def test_the_kernel_ran_without_progress_bars_and_the_size_is_recorded(saved):
    assert [o.text for o in outputs(saved, "environment")] == ["TQDM_DISABLE 1\n"]
    assert saved.metadata["xdlearn"] == {"size": "smoke"}


def test_the_widget_state_holds_the_slider_and_what_the_output_widget_captured(saved):
    state = saved.metadata["widgets"][WIDGET_STATE]["state"]
    slider = outputs(saved, "slider")[0].data[WIDGET_VIEW]["model_id"]
    assert state[slider]["model_name"] == "IntSliderModel" and state[slider]["state"]["value"] == 7
    shown = outputs(saved, "output widget")
    assert len(shown) == 1, f"the Output widget's prints leaked into the cell: {shown}"
    captured = state[shown[0].data[WIDGET_VIEW]["model_id"]]["state"]["outputs"]
    assert [(o["output_type"], o["text"]) for o in captured] == [("stream", "inside 2\n")]


def test_a_notebook_with_a_failing_cell_is_not_saved_and_its_old_copy_goes(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "broken.ipynb").write_text("an old copy")
    done = run_tests(tmp_path, notebook(tmp_path, ["print('fine')", "1 / 0", "print('after')"], "broken.ipynb"),
                     save=executed)
    assert done.returncode != 0 and "ZeroDivisionError" in done.stdout
    assert list(executed.iterdir()) == []


def test_without_the_variable_nothing_is_saved(tmp_path):
    path = notebook(tmp_path, ["print('fine')"])
    done = run_tests(tmp_path, path, save=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(tmp_path.rglob("*.ipynb")) == [path]


# --- book/build.py --executed refuses what it must not build from --------------------------------------------------

def lessons_folder(folder: Path, size: str | None = "teaching") -> Path:
    """Every lesson of notebooks/, as if a test run had saved it (recording ``size``), without outputs."""
    folder.mkdir(exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if size:
            nb.metadata["xdlearn"] = {"size": size}
        nbformat.write(nb, folder / path.name)
    return folder


def test_the_executed_build_refuses_a_folder_missing_a_lesson(tmp_path):
    (lessons_folder(tmp_path) / "03_fine_tuning_strategies.ipynb").unlink()
    done = subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--executed", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "lacks the executed lesson(s) 03_fine_tuning_strategies.ipynb:" in done.stderr, done.stderr


@pytest.fixture
def build_module():
    """book/build.py's functions."""
    return runpy.run_path(str(ROOT / "book" / "build.py"), run_name="book_build")


@pytest.mark.parametrize("cell_type", ["code", "markdown"])
def test_the_executed_build_refuses_a_lesson_that_has_changed_since(tmp_path, build_module, cell_type):
    folder = lessons_folder(tmp_path)
    build_module["executed_lessons"](folder)   # as they are now: accepted
    nb = nbformat.read(folder / "02_fine_tuning.ipynb", as_version=4)
    next(c for c in nb.cells if c.cell_type == cell_type).source += "\n# changed"
    nbformat.write(nb, folder / "02_fine_tuning.ipynb")
    with pytest.raises(build_module["BuildError"], match=r": 02_fine_tuning.ipynb differ\(s\) from the lesson"):
        build_module["executed_lessons"](folder)


def test_the_executed_build_takes_the_size_the_lessons_ran_at(tmp_path, build_module):
    size_of, read = build_module["executed_size"], build_module["executed_lessons"]
    assert size_of(read(lessons_folder(tmp_path / "smoke", "smoke"))) == "smoke"
    lessons = read(lessons_folder(tmp_path / "unsaid", None))
    with pytest.raises(build_module["BuildError"], match="no size in metadata"):
        size_of(lessons)
    lessons["08_choosing.ipynb"].metadata["xdlearn"] = {"size": "smoke"}
    for name in lessons:
        lessons[name].metadata.setdefault("xdlearn", {"size": "teaching"})
    with pytest.raises(build_module["BuildError"], match="ran at different sizes"):
        size_of(lessons)
