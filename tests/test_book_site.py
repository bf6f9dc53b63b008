"""The built book, as a reader meets it: served on 127.0.0.1 and opened in Chromium.

Run with ``python -m pytest --book-site tests/test_book_site.py`` after ``python book/build.py`` (or ``--quick``, or
``--executed <dir>`` from the lessons a test run saved, as CI does; ``book/_build/xdlearn-build.json`` says which).
The default test run deselects these tests; with ``--book-site`` and no built site they fail, saying how to build it.
Chromium is Debian's (``apt-get install chromium``), driven by the ``playwright`` package: no browser download.
"""
from __future__ import annotations

import functools
import http.server
import re
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "book" / "_build" / "html"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOAD_TIMEOUT_MS = 60_000        # a lesson page carries MBs of figures and widget state
WIDGET_TIMEOUT_MS = 30_000      # the html-manager renders widgets after the page has loaded
LESSONS = [chapter["file"] for part in yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())["parts"]
           for chapter in part["chapters"] if chapter["file"].startswith("notebooks/")]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLACEHOLDERS = ("Loading widget", "Error displaying widget", "model not found")

pytestmark = pytest.mark.book_site


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; keeps the test output free of one log line per request."""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def site() -> str:
    """The built site served on 127.0.0.1 at a free port; its base URL."""
    if not (SITE / "index.html").exists() or not all((SITE / f"{lesson}.html").exists() for lesson in LESSONS):
        pytest.fail(f"the book is not built: {SITE} has no complete site. Build it first with "
                    f"`python book/build.py --quick` (smoke size), `python book/build.py` (teaching size) or "
                    f"`python book/build.py --executed <dir>` (the lessons a test run saved).",
                    pytrace=False)
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium, headless, with a fresh profile; one context for the whole module."""
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)", pytrace=False)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


class Visit:
    """One page opened in the browser, with everything it logged and requested on the way."""

    def __init__(self, context, url: str):
        self.errors, self.foreign = [], []
        self.page = context.new_page()
        host = urlsplit(url).netloc
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("requestfailed", lambda req: self.errors.append(f"request failed: {req.url} {req.failure}"))
        self.page.on("request", lambda req: urlsplit(req.url).netloc not in (host, "")
                     and not req.url.startswith("data:") and self.foreign.append(req.url))
        self.response = self.page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
        self.page.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)

    def close(self) -> None:
        self.page.close()


@pytest.fixture(scope="module")
def lesson_pages(site, browser):
    """Every lesson page, opened once; closed at the end."""
    visits = {lesson: Visit(browser, urljoin(site, f"{lesson}.html")) for lesson in LESSONS}
    yield visits
    for visit in visits.values():
        visit.close()


def widget_views(lesson: str) -> int:
    """How many widget views the built page carries (from the executed lesson's outputs)."""
    return (SITE / f"{lesson}.html").read_text(encoding="utf-8").count(f'type="{WIDGET_VIEW}"')


def test_the_book_has_every_lesson_and_its_pages():
    assert len(LESSONS) == len(list((ROOT / "notebooks").glob("*.ipynb")))


def heading(lesson: str) -> str:
    """The start of a notebook's title as the page shows it: its first heading, up to any colon or code."""
    title = nbformat.read(ROOT / f"{lesson}.ipynb", as_version=4).cells[0].source.splitlines()[0]
    return re.split(r"[:`]", title.lstrip("# "))[0].strip()


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_page_loads_without_errors_or_foreign_requests(lesson_pages, lesson):
    visit = lesson_pages[lesson]
    assert visit.response is not None and visit.response.status == 200
    assert visit.errors == [], f"{lesson}: JavaScript errors or failed requests: {visit.errors}"
    assert visit.foreign == [], f"{lesson}: requests to other sites (a CDN?): {visit.foreign}"
    scripts = visit.page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
    assert scripts and all(urlsplit(src).netloc == urlsplit(visit.page.url).netloc for src in scripts), scripts
    title = visit.page.text_content("article h1") or ""
    assert title.startswith(heading(lesson)), f"{lesson}: page title {title!r}, not the notebook's {heading(lesson)!r}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_page_shows_its_figures(lesson_pages, lesson):
    page = lesson_pages[lesson].page
    images = page.eval_on_selector_all(
        "article img", "els => els.map(e => [e.getAttribute('src').slice(0, 60), e.complete, e.naturalWidth])")
    if lesson.split("/")[1][:2].isdigit():   # every numbered lesson draws figures; the extra pages may not
        assert images, f"{lesson}: no figure on the page"
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"{lesson}: {len(broken)} of {len(images)} images did not load: {broken}"


def wait_for_widgets(page, lesson: str) -> int:
    """Wait until the page has rendered as many widgets as its saved outputs hold; return that number."""
    views = widget_views(lesson)
    if views:
        page.wait_for_function(f"document.querySelectorAll('.widget-subarea .jupyter-widgets').length >= {views}",
                               timeout=WIDGET_TIMEOUT_MS)
    return views


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_page_renders_its_widgets_from_their_saved_state(lesson_pages, lesson):
    page = lesson_pages[lesson].page
    if not wait_for_widgets(page, lesson):   # a lesson without widgets must not show a widget's remains either
        assert page.locator(".widget-subarea").count() == 0
    outputs = " ".join(page.locator(".cell_output").all_inner_texts()).lower()   # outputs, not the prose
    assert not [p for p in PLACEHOLDERS if p.lower() in outputs], f"{lesson}: a widget did not render"
    assert lesson_pages[lesson].errors == []


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_page_shows_a_progress_bar_of_the_build(lesson_pages, lesson):
    """tqdm bars are off while the book executes; only a training board (lesson 05) carries a bar, on purpose."""
    page = lesson_pages[lesson].page
    wait_for_widgets(page, lesson)   # every saved widget drawn: a bar in the saved state would show now
    bars = page.locator(".widget-subarea .widget-hprogress").count()
    boards = page.locator(".widget-subarea", has=page.locator(".widget-hprogress"),
                          has_text="step").count()
    assert bars == boards, f"{lesson}: {bars - boards} progress bar(s) left from the build on the page"


def test_lesson_05_shows_the_board_the_explorer_and_the_comparison(lesson_pages):
    page = lesson_pages["notebooks/05_knowledge_distillation"].page
    page.wait_for_selector(".widget-subarea .widget-slider", timeout=WIDGET_TIMEOUT_MS)
    counts = {name: page.locator(f".widget-subarea {css}").count() for name, css in {
        "training board's progress bar": ".widget-hprogress", "temperature slider": ".widget-slider",
        "example pickers": ".widget-dropdown select", "sentence box": ".widget-text input",
        "disagreement tick box": ".widget-checkbox input", "plots inside widgets": ".widget-output img"}.items()}
    assert all(counts.values()), f"lesson 05's widgets are incomplete: {counts}"
    assert counts["example pickers"] >= 2 and counts["plots inside widgets"] >= 2, counts
    board = page.locator(".widget-subarea", has=page.locator(".widget-hprogress")).inner_text()
    assert "step" in board and "loss" in board, f"the training board shows no final state: {board!r}"
    comparison = page.locator(".widget-subarea", has=page.locator(".widget-checkbox")).inner_text()
    assert "teacher" in comparison and "student" in comparison, comparison


class Links(HTMLParser):
    """The href of every anchor and the id of every element of one page."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if attrs.get("id"):
            self.ids.add(attrs["id"])


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def test_every_internal_link_resolves(site):
    pages = sorted(SITE.rglob("*.html"))
    checked, broken = set(), []
    for page in pages:
        url = urljoin(site, quote(page.relative_to(SITE).as_posix()))
        for href in parse(page).hrefs:
            target = urljoin(url, href)
            if urlsplit(target).netloc != urlsplit(site).netloc or target in checked:
                continue
            checked.add(target)
            path, fragment = urlsplit(target).path, urlsplit(target).fragment
            try:
                with urllib.request.urlopen(target.split("#")[0], timeout=10) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            if status != 200:
                broken.append(f"{page.relative_to(SITE)} -> {href}: HTTP {status}")
                continue
            file = SITE / path.lstrip("/")
            file = file / "index.html" if file.is_dir() else file
            if fragment and file.suffix == ".html" and fragment not in parse(file).ids:
                broken.append(f"{page.relative_to(SITE)} -> {href}: no element with id {fragment!r}")
    assert len(pages) >= len(LESSONS) + 4 and len(checked) > 50, (len(pages), len(checked))
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:30])


def search_word(lesson: str) -> str:
    """A word of the lesson's title: the longest one, so that the search is specific."""
    text = (SITE / f"{lesson}.html").read_text(encoding="utf-8")
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S)[1]
    return max(re.findall(r"[A-Za-z]{4,}", re.sub(r"<[^>]+>", " ", heading)), key=len).lower()


@pytest.mark.parametrize("lesson", LESSONS)
def test_search_finds_the_lesson_by_a_word_of_its_title(site, browser, lesson):
    word = search_word(lesson)
    visit = Visit(browser, urljoin(site, f"search.html?q={quote(word)}"))
    try:
        visit.page.wait_for_function(
            "document.querySelector('#search-results') && "
            "!document.querySelector('#search-results').innerText.includes('Preparing search')"
            " && document.querySelectorAll('#search-results li').length + "
            "(document.querySelector('#search-results p.search-summary') ? 1 : 0) > 0",
            timeout=LOAD_TIMEOUT_MS)
        found = visit.page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        assert any(href.split("#")[0].endswith(f"{lesson}.html") for href in found), \
            f"searching {word!r} does not find {lesson}: {found}"
        assert visit.errors == [] and visit.foreign == [], (visit.errors, visit.foreign)
    finally:
        visit.close()
