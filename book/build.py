"""Build the xdlearn book: ``python book/build.py`` (teaching size) or ``python book/build.py --quick`` (smoke size).

What it does, in order:

1. fetches the browser code the pages need from npm, pinned by version and by the tarball's sha512 (the same
   integrity string npm records), into ``book/_build/npm``: require.js and ``@jupyter-widgets/html-manager`` (to
   render the saved widget state) and MathJax (the formulas); the site then serves them itself, never a CDN;
2. executes every lesson through jupyter-cache, one cache per size, so a rebuild re-executes only the lessons
   whose code changed; ``XDLEARN_QUICK`` and this checkout on ``PYTHONPATH`` reach the kernels;
3. builds the HTML with Sphinx, warnings as errors: a lesson that raises, a failing check cell included, fails the
   build;
4. checks the result: no page loads a script from another site, and every page showing a widget carries its
   saved state.

``python book/build.py --executed <dir>`` skips step 2: it builds from lessons a test run has already executed and
saved in ``<dir>`` (``XDLEARN_SAVE_EXECUTED=<dir>`` with the README's test command, as CI does), at the size they
ran at, and refuses a folder that lacks a lesson or holds one executed from other code than the lesson has now.

The site is ``book/_build/html``; ``tests/test_book_site.py`` tests it in a browser (``pytest --book-site``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import nbformat

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
BUILD = BOOK / "_build"
HTML = BUILD / "html"
NPM_CACHE = BUILD / "npm"
STATIC = BUILD / "static-js"            # html_static_path in _config.yml: copied to html/_static
STAMP = BUILD / "xdlearn-build.json"     # the size the current html/ was built at
EXECUTED_SOURCE = BUILD / "executed-source"   # --executed: the book's sources, the lessons replaced by executed ones
SIZE_KEY = "xdlearn"                     # an executed lesson's metadata: {"size": ...} (tests/executed.py writes it)
QUICK_VARIABLE = "XDLEARN_QUICK"
SIZE_NAMES = {"teaching": "teaching size (the lessons' default configuration)",
              "smoke": "smoke size (XDLEARN_QUICK=1: tiny data, noisy numbers, check cells report without asserting)"}

# name@version, the sha512 of its tarball as npm's registry records it, and what of it the site serves
NPM_PACKAGES = {
    "requirejs@2.3.8": (
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        {"package/require.js": "require.js"}),
    "@jupyter-widgets/html-manager@1.0.15": (
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        {"package/dist/": "html-manager/"}),   # embed-amd.js and the icon fonts it loads beside itself
    "mathjax@3.2.2": (
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {"package/es5/": "mathjax/es5/"}),     # tex-mml-chtml.js and the components and fonts it loads
}
SKIP_SUFFIXES = (".map", ".LICENSE.txt")     # source maps and licence notes: not loaded by a page
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"'](?:https?:)?//", re.IGNORECASE)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


class BuildError(RuntimeError):
    """The book cannot be built, or the built site breaks a promise (CDN scripts, widgets without state)."""


def sri_sha512(path: Path) -> str:
    """The Subresource-Integrity string of a file, as npm writes it (``sha512-<base64>``)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def tarball_name(spec: str) -> str:
    """The file name ``npm pack`` gives a package: ``@scope/name@1.0`` -> ``scope-name-1.0.tgz``."""
    name, version = spec.rsplit("@", 1)
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch(spec: str, integrity: str) -> Path:
    """The package's tarball from npm (kept in book/_build/npm), refused unless its sha512 is the pinned one."""
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    tarball = NPM_CACHE / tarball_name(spec)
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError("npm is needed to fetch the widget and maths JavaScript: install Node.js and npm")
        done = subprocess.run([npm, "pack", spec, "--pack-destination", str(NPM_CACHE), "--silent"],
                              capture_output=True, text=True)
        if done.returncode != 0 or not tarball.exists():
            raise BuildError(f"npm pack {spec} failed: {done.stderr.strip() or done.stdout.strip()}")
    found = sri_sha512(tarball)
    if found != integrity:
        tarball.unlink()
        raise BuildError(f"{spec}: tarball sha512 {found} is not the pinned {integrity}; deleted it, refusing to use it")
    return tarball


def unpack(tarball: Path, mapping: dict[str, str]) -> int:
    """Copy the mapped files or folders of a tarball into the static folder; returns the number of files."""
    count = 0
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if not member.isfile() or member.name.endswith(SKIP_SUFFIXES):
                continue
            for source, target in mapping.items():
                if member.name == source or (source.endswith("/") and member.name.startswith(source)):
                    dest = STATIC / (target + member.name[len(source):] if source.endswith("/") else target)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(archive.extractfile(member).read())
                    count += 1
    return count


def prepare_static() -> None:
    """Fetch and verify every pinned npm package and lay out the files the site serves."""
    shutil.rmtree(STATIC, ignore_errors=True)
    for spec, (integrity, mapping) in NPM_PACKAGES.items():
        files = unpack(fetch(spec, integrity), mapping)
        if files == 0:
            raise BuildError(f"{spec}: none of {list(mapping)} found in its tarball")
        print(f"npm {spec}: integrity verified, {files} files served from the site")


def quick_requested(args: argparse.Namespace) -> bool:
    """Smoke size when ``--quick`` is given or ``XDLEARN_QUICK`` asks for it (the lessons' own rule)."""
    sys.path.insert(0, str(ROOT))
    from xdlearn.lesson import quick
    if args.quick:
        os.environ[QUICK_VARIABLE] = "1"
    return quick()


def kernel_environment() -> None:
    """Kernels inherit this process's environment: put this checkout first on PYTHONPATH, and no progress bars.

    A tqdm bar is a widget in a notebook: on a static page it would only show a run that ended at build time.
    ``TQDM_DISABLE`` turns off the library's bars (``runtime.progress_wanted``; tqdm's own notebook bar ignores the
    variable) and tqdm's terminal bars; widgets a lesson shows on purpose, such as the training board, stay.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def run_sphinx(size: str, fresh: bool, strict: bool, book: Path = BOOK, execute: bool = True) -> None:
    """Execute (through the size's jupyter-cache) and render every page of ``book``; raises BuildError on failure.

    The output goes to ``<book>/_build/html``, the executed lessons to ``<book>/_build/.jupyter_cache/<size>``.
    With ``execute=False`` nothing runs: the pages show the outputs the notebooks already hold.
    """
    from jupyter_book.sphinx import build_sphinx
    build = book / "_build"
    overrides = {"external_toc_path": str(book / "_toc.yml"), "latex_individualpages": False,
                 "nb_execution_cache_path": str(build / ".jupyter_cache" / size),
                 "myst_substitutions": {"build_size": SIZE_NAMES[size]}}
    if not execute:
        overrides["nb_execution_mode"] = "off"
    result = build_sphinx(book, build / "html", use_external_toc=True, noconfig=True,
                          path_config=str(book / "_config.yml"), confoverrides=overrides, builder="html",
                          freshenv=fresh, warningiserror=strict, keep_going=strict)
    if isinstance(result, BaseException) or result not in (0, None):
        raise BuildError(f"Sphinx failed ({result!r}): see the messages above (a lesson that raised prints the "
                         f"failing cell and its traceback there)")


def check_site() -> int:
    """No page loads a script from another site; every page with widget views carries the saved widget state."""
    pages = sorted(p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)  # not theme parts
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if EXTERNAL_SCRIPT.search(text):
            problems.append(f"{page.relative_to(HTML)}: loads a script from another site")
        if WIDGET_VIEW in text and WIDGET_STATE not in text:
            problems.append(f"{page.relative_to(HTML)}: shows widgets but carries no saved widget state")
    if problems:
        raise BuildError("the built site breaks its promises:\n  " + "\n  ".join(problems))
    return len(pages)


def toc_lessons() -> list[str]:
    """The file name of every lesson the table of contents lists, in order."""
    import yaml
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text(encoding="utf-8"))
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [Path(file).name + ".ipynb" for file in files if file.startswith("notebooks/")]


def sources(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """The type and source of each cell: the code a run executes and the prose the page shows."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def executed_lessons(folder: Path) -> dict[str, nbformat.NotebookNode]:
    """Every lesson's executed notebook in ``folder``; BuildError if one is missing or differs from the lesson now."""
    missing = [name for name in toc_lessons() if not (folder / name).is_file()]
    if missing:
        raise BuildError(f"{folder} lacks the executed lesson(s) {', '.join(missing)}: save them with the test "
                         f"command and XDLEARN_SAVE_EXECUTED={folder} (a lesson with a failing cell is not saved)")
    lessons = {name: nbformat.read(folder / name, as_version=4) for name in toc_lessons()}
    stale = [name for name, nb in lessons.items()
             if sources(nb) != sources(nbformat.read(BOOK / "notebooks" / name, as_version=4))]
    if stale:
        raise BuildError(f"{folder}: {', '.join(stale)} differ(s) from the lesson in notebooks/ (its cells' sources): "
                         f"executed from an older version? Run the tests again")
    return lessons


def executed_size(lessons: dict[str, nbformat.NotebookNode]) -> str:
    """The size the test run executed the lessons at (recorded in each); one size for the whole book."""
    sizes = {name: nb.metadata.get(SIZE_KEY, {}).get("size") for name, nb in lessons.items()}
    unknown = [name for name, size in sizes.items() if size not in SIZE_NAMES]
    if unknown:
        raise BuildError(f"{', '.join(unknown)}: no size in metadata['{SIZE_KEY}'], not saved by a test run "
                         f"with XDLEARN_SAVE_EXECUTED")
    if len(set(sizes.values())) > 1:
        raise BuildError(f"the executed lessons ran at different sizes: {sizes}")
    return next(iter(sizes.values()))


def executed_source(folder: Path, lessons: dict[str, nbformat.NotebookNode]) -> Path:
    """The book's sources (links) with the executed lessons in notebooks/, and book/_build as their build folder."""
    shutil.rmtree(EXECUTED_SOURCE, ignore_errors=True)
    (EXECUTED_SOURCE / "notebooks").mkdir(parents=True)
    for entry in BOOK.iterdir():
        if entry.name not in ("_build", "notebooks"):
            (EXECUTED_SOURCE / entry.name).symlink_to(entry)
    (EXECUTED_SOURCE / "_build").symlink_to(BUILD)   # the same html/, static-js/ and doctrees as the normal build
    for name in lessons:
        shutil.copyfile(folder / name, EXECUTED_SOURCE / "notebooks" / name)
    return EXECUTED_SOURCE


def plan(args: argparse.Namespace) -> tuple[str, Path, bool]:
    """The size, the sources and whether every page must be re-read: executed here, or by a test run (--executed)."""
    previous = json.loads(STAMP.read_text()) if STAMP.exists() else {}
    if args.executed:
        lessons = executed_lessons(args.executed)
        return executed_size(lessons), executed_source(args.executed, lessons), True
    size = "smoke" if quick_requested(args) else "teaching"
    kernel_environment()
    # the same sources at another size, or a site built from a test run's lessons: every page must be re-read
    return size, BOOK, args.all or previous.get("size") != size or bool(previous.get("executed"))


def main(argv: list[str] | None = None) -> int:
    """Build the book; print the size, the time and the number of pages."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--quick", action="store_true", help="smoke size (the same as XDLEARN_QUICK=1)")
    how.add_argument("--executed", type=Path, metavar="DIR",
                     help="build from the lessons a test run executed and saved in DIR (XDLEARN_SAVE_EXECUTED); "
                          "nothing is executed, the size is the one they ran at")
    parser.add_argument("--all", action="store_true", help="re-read every page (executed lessons stay cached)")
    parser.add_argument("--no-strict", dest="strict", action="store_false", help="do not treat warnings as errors")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        size, book, fresh = plan(args)
        source = f" from the lessons executed in {args.executed}" if args.executed else ""
        print(f"building the book at the {size} size{source}{' (every page)' if fresh else ''}")
        prepare_static()
        STAMP.unlink(missing_ok=True)
        run_sphinx(size, fresh, args.strict, book=book, execute=not args.executed)
        pages = check_site()
    except BuildError as error:
        print(f"book build FAILED: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    STAMP.write_text(json.dumps({"size": size, "pages": pages, "seconds": round(seconds),
                                 "executed": str(args.executed.resolve()) if args.executed else None}))
    print(f"book built at the {size} size{source} in {seconds:.0f} s: {pages} pages in {HTML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
