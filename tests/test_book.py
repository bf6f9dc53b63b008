"""The book's sources and build promises, without building the whole book.

The lessons in the table of contents, the citations, the intro's timings and the README's links are read from the
files; the two build promises (a lesson that raises fails the build; a rebuild re-executes only the lesson that
changed) are tested by building a two-page book with the real ``book/_config.yml``. The built site itself is tested
in a browser by ``tests/test_book_site.py`` (``pytest --book-site``).
"""
from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB_KEY = re.compile(r"^@\w+\{([^,\s]+),", re.MULTILINE)
RUNS_LOG = "executions.log"   # each test lesson appends its name here when a kernel runs it


def toc_files() -> list[str]:
    """Every file the table of contents lists, in order."""
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text(encoding="utf-8"))
    return [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]


def cited_keys() -> dict[str, set[str]]:
    """Citation keys used by each lesson and each markdown page of the book."""
    sources = {p.name: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown")
               for p in NOTEBOOKS}
    sources.update({p.name: p.read_text(encoding="utf-8") for p in BOOK.glob("*.md")})
    return {name: {key.strip() for match in CITE.findall(text) for key in match.split(",")}
            for name, text in sources.items()}


def test_the_book_lists_every_lesson_in_order():
    lessons = [f for f in toc_files() if f.startswith("notebooks/")]
    assert lessons == [f"notebooks/{p.stem}" for p in NOTEBOOKS]
    assert (BOOK / "notebooks").resolve() == (ROOT / "notebooks").resolve(), "book/notebooks must link to notebooks/"


def test_every_citation_has_an_entry_and_every_entry_is_cited():
    entries = set(BIB_KEY.findall((BOOK / "references.bib").read_text(encoding="utf-8")))
    used = cited_keys()
    missing = {name: keys - entries for name, keys in used.items() if keys - entries}
    assert not missing, f"cited but not in book/references.bib: {missing}"
    uncited = entries - set().union(*used.values())
    assert not uncited, f"in book/references.bib but cited nowhere: {sorted(uncited)}"


def test_the_intro_quotes_the_measured_lesson_times():
    measured = {}
    for line in (ROOT / "benchmarks/results/notebooks.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].endswith(".ipynb"):
            measured[cells[0][:2]] = (round(float(cells[1]) / 60, 1), round(float(cells[3]) / 1000, 1))
    intro = {}
    for line in (BOOK / "intro.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| \{doc\}`(\d\d) .*? \| ([\d.]+) \| ([\d.]+) GB \|$", line)
        if row:
            intro[row[1]] = (float(row[2]), float(row[3]))
    assert set(measured) == {p.name[:2] for p in NOTEBOOKS if p.name[:2].isdigit()}   # the numbered lessons
    assert intro == measured, "book/intro.md's minutes and peak memory differ from benchmarks/results/notebooks.md"


def test_readme_links_each_lesson_to_its_page_and_has_a_binder_badge():
    config = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))
    site = config["html"]["baseurl"].rstrip("/")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"]({site}/notebooks/{path.stem}.html)" in readme, f"README does not link {path.stem} to its page"
    repository = config["repository"]["url"].removeprefix("https://github.com/")
    assert f"(https://mybinder.org/v2/gh/{repository}/" in readme and "badge_logo.svg" in readme


# --- building a small book with the real configuration -------------------------------------------------------------

def lesson(name: str, code: str) -> nbformat.NotebookNode:
    """A one-cell lesson that records each execution in RUNS_LOG, then runs ``code``."""
    record = f"with open({RUNS_LOG!r}, 'a') as log:\n    log.write({name!r} + '\\n')\n"
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}"),
                                           nbformat.v4.new_code_cell(record + code)],
                                    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})


def small_book(folder: Path, lessons: dict[str, str]) -> Path:
    """A book with the real _config.yml and extensions, and one page per (name, code) lesson."""
    shutil.copy(BOOK / "_config.yml", folder / "_config.yml")
    shutil.copy(BOOK / "references.bib", folder / "references.bib")
    shutil.copytree(BOOK / "_ext", folder / "_ext")
    shutil.copytree(BOOK / "_js", folder / "_js")
    shutil.copy(BOOK / "favicon.svg", folder / "favicon.svg")
    (folder / "_build" / "static-js").mkdir(parents=True)   # build.py fills it from npm; not needed here
    (folder / "intro.md").write_text("# A small book\n", encoding="utf-8")
    toc = {"format": "jb-book", "root": "intro", "chapters": [{"file": name} for name in lessons]}
    (folder / "_toc.yml").write_text(yaml.safe_dump(toc), encoding="utf-8")
    for name, code in lessons.items():
        nbformat.write(lesson(name, code), folder / f"{name}.ipynb")
    return folder


def executions(folder: Path) -> list[str]:
    """The lessons a kernel has run so far, in order (and forget them)."""
    log = folder / RUNS_LOG
    runs = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return runs


@pytest.fixture
def build_module(monkeypatch):
    """book/build.py's functions, with the kernels importing this checkout at the teaching size."""
    monkeypatch.delenv("XDLEARN_QUICK", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return runpy.run_path(str(BOOK / "build.py"), run_name="book_build")


def test_a_lesson_whose_check_cell_fails_fails_the_build(tmp_path, build_module, capfd):
    book = small_book(tmp_path, {"fine": "print(1 + 1)"})
    build_module["run_sphinx"]("teaching", fresh=True, strict=True, book=book)   # the configuration builds
    broken = "from xdlearn import lesson\nprint(lesson.check(1 + 1 == 3, 'one and one make three'))"
    nbformat.write(lesson("broken", broken), book / "broken.ipynb")
    (book / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro",
                                                   "chapters": [{"file": "fine"}, {"file": "broken"}]}))
    executions(book)
    capfd.readouterr()
    with pytest.raises(build_module["BuildError"]):
        build_module["run_sphinx"]("teaching", fresh=False, strict=True, book=book)
    assert executions(book) == ["broken"]
    printed = "".join(capfd.readouterr())
    assert "claim no longer holds: one and one make three" in printed, "the build does not say which claim failed"


def test_a_rebuild_executes_only_the_lesson_that_changed(tmp_path, build_module):
    book = small_book(tmp_path, {"first": "print('first says', 1)", "second": "print('second says', 2)"})
    build = build_module["run_sphinx"]
    build("teaching", fresh=True, strict=True, book=book)
    assert sorted(executions(book)) == ["first", "second"]
    build("teaching", fresh=False, strict=True, book=book)
    assert executions(book) == [], "nothing changed, yet a lesson ran again"
    nbformat.write(lesson("second", "print('second says', 3)"), book / "second.ipynb")
    build("teaching", fresh=False, strict=True, book=book)
    assert executions(book) == ["second"]
    page = (book / "_build" / "html" / "second.html").read_text(encoding="utf-8")
    assert "second says 3" in page and "second says 2" not in page, "the page does not show the new output"


def test_a_cells_printed_lines_show_as_one_output_block(tmp_path, build_module):
    """Lines a cell prints apart in time arrive as separate stream messages; the page shows them as one block.

    The book's build from saved lessons (``--executed``) merges them when it saves; this is the executing build.
    """
    code = "import time\nprint('first line', flush=True)\ntime.sleep(0.5)\nprint('second line', flush=True)"
    book = small_book(tmp_path, {"streams": code})
    build_module["run_sphinx"]("teaching", fresh=True, strict=True, book=book)
    page = (book / "_build" / "html" / "streams.html").read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="output stream[^"]*">(.*?)</div>', page, flags=re.DOTALL)
    assert len(blocks) == 1, f"{len(blocks)} stream output blocks for one cell's printed lines"
    assert "first line" in blocks[0] and "second line" in blocks[0]
