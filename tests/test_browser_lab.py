"""Lesson 05 in a real JupyterLab, driven by Chromium: run every cell, then use the two widgets as a learner would.

The test starts its own JupyterLab (127.0.0.1, a free port, a token, the lesson at smoke size) and stops only
that server. It needs Debian's ``chromium`` and the ``playwright`` package (``.ci/run`` installs both); without
them it fails and says what is missing, it is never skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the browser fixture reports this as a failure, never as a skip
    PlaywrightTimeout = sync_playwright = None

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
LESSON = "notebooks/05_knowledge_distillation.ipynb"
CHROMIUM = os.environ.get("XDLEARN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_ALL_SECONDS = 1200     # the whole lesson at smoke size, on a busy 2-core machine
SERVER_START_SECONDS = 120


def _free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, method: str = "GET") -> bytes:
    """One HTTP request to the local server."""
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return response.read()


def _lab_settings(home: Path) -> Path:
    """User settings: autosave off, so the run never writes outputs into the repository; every cell kept in the
    page (no windowing), so an output far below the viewport can still be read."""
    settings = {("docmanager-extension", "plugin"): {"autosave": False},
                ("notebook-extension", "tracker"): {"windowingMode": "none"}}
    for (extension, plugin), values in settings.items():
        folder = home / "settings" / "@jupyterlab" / extension
        folder.mkdir(parents=True)
        (folder / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
    return home / "settings"


def _start_lab(home: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab on 127.0.0.1:port in its own process group, config and runtime files kept under ``home``."""
    env = dict(os.environ, XDLEARN_QUICK="1", PYTHONPATH=str(ROOT), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.allow_root=True",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           f"--LabApp.user_settings_dir={_lab_settings(home)}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(home / "lab.log", "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(server: subprocess.Popen, url: str, log: Path) -> None:
    """Poll the server's status until it answers; fail with its log if it exits or never answers."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(1)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen, base: str, token: str) -> None:
    """Shut down this server's kernels (they run in their own sessions), then end its process group."""
    try:
        for kernel in json.loads(_get(f"{base}/api/kernels?token={token}")):
            _get(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
    except OSError:
        pass  # the server is already gone, and its kernels with it
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab this test started, as (base URL, token); stopped, with its kernels, afterwards."""
    home = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), os.urandom(16).hex()
    base = f"http://127.0.0.1:{port}"
    server = _start_lab(home, port, token)
    try:
        _wait_for(server, f"{base}/api/status?token={token}", home / "lab.log")
        yield base, token
    finally:
        _stop(server, base, token)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A Chromium page from Debian's browser, with a fresh profile; fails clearly if either piece is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
                    "or point XDLEARN_CHROMIUM at a Chromium binary")
    if sync_playwright is None:
        pytest.fail("the playwright package is missing: pip install -r requirements.txt")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()


def _click_run_all(page) -> None:
    """Run → Run All Cells from the menu bar, once the kernel is idle; again if no cell got queued."""
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=180_000)
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.locator(".jp-CodeCell .jp-InputArea-prompt", has_text="[*]").first.wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            continue
    pytest.fail("Run All Cells did not start any cell")


def _run_all_cells(page) -> None:
    """Run every cell and wait until each has finished; fail with the traceback if one raises."""
    _click_run_all(page)
    deadline = time.monotonic() + RUN_ALL_SECONDS
    while time.monotonic() < deadline:
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                              ":has-text('Traceback')")
        if errors.count():
            pytest.fail(f"a cell of {LESSON} raised:\n{errors.first.inner_text()[-3000:]}")
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        if prompts and all(p.strip() not in ("[ ]:", "[*]:") for p in prompts):
            return
        time.sleep(2)
    pytest.fail(f"{LESSON} did not finish within {RUN_ALL_SECONDS} s")


def _texts(page, selector: str) -> list[str]:
    """The visible text of every element ``selector`` matches, as the learner reads it."""
    return page.locator(selector).all_inner_texts()


def _wait_for_change(page, selector: str, before: list[str], seconds: float = 60) -> list[str]:
    """Poll the DOM until the text of ``selector`` differs from ``before``; return the new text."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = _texts(page, selector)
        if now and now != before:
            return now
        time.sleep(0.5)
    pytest.fail(f"{selector} still shows {before} after {seconds} s")


def _toggle_disagreements(page) -> None:
    """Tick "only disagreements": the first is selected, or the view says there is none; untick: example 1 again."""
    view, select = page.locator(".xd-comparison .widget-html-content").last, page.locator(".xd-comparison select")
    tick, every = page.locator(".xd-comparison input[type='checkbox']"), select.evaluate("s => s.options.length")
    tick.check()
    page.wait_for_function("([s, n]) => s.options.length !== n && (s.selectedIndex === 0 || s.options.length === 0)",
                           arg=[select.element_handle(), every])
    if select.evaluate("s => s.options.length") == 0:
        assert f"no disagreements among {every} examples" in view.inner_text()
    else:
        assert "they disagree" in view.inner_text()
    tick.uncheck()
    page.wait_for_function("([s, n]) => s.options.length === n && s.selectedIndex === 0",
                           arg=[select.element_handle(), every])
    assert "true label:" in view.inner_text() and "teacher predicts" in view.inner_text()


def test_lesson_05_runs_in_jupyterlab_and_its_widgets_answer(lab, browser_page):
    base, token = lab
    page = browser_page
    before_file = hashlib.sha256((ROOT / LESSON).read_bytes()).hexdigest()
    page.goto(f"{base}/lab/tree/{LESSON}?token={token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    _run_all_cells(page)

    teacher, student = "[data-model='teacher'].xd-prob", "[data-model='student'].xd-prob"
    page.locator(teacher).first.wait_for()
    shown_t, shown_s = _texts(page, teacher), _texts(page, student)
    assert len(shown_t) == len(shown_s) == 2 and all(float(v) >= 0 for v in shown_t + shown_s)
    assert "teacher predicts" in page.locator(".xd-verdict").inner_text()
    box = page.locator(".xd-comparison input[type='text']")
    box.fill("An utterly wonderful film, I loved every minute of it.")
    box.press("Enter")
    typed_t = _wait_for_change(page, teacher, shown_t)
    typed_s = _wait_for_change(page, student, shown_s)
    assert abs(sum(map(float, typed_t)) - 1) < 0.01 and abs(sum(map(float, typed_s)) - 1) < 0.01
    assert "An utterly wonderful film" in page.locator(".xd-comparison .widget-html-content").last.inner_text()
    assert page.locator(".xd-comparison select").evaluate("s => s.selectedIndex") == -1  # no stale example

    _toggle_disagreements(page)

    entropy = ".xd-temperature .xd-entropy"
    before = _texts(page, entropy)
    assert before and before[0].startswith("T = 1.0")
    handle = page.locator(".xd-temperature .noUi-handle")
    handle.focus()
    handle.press("End")  # the slider's keyboard control: to the largest temperature
    after = _wait_for_change(page, entropy, before)
    assert after[0].startswith("T = 10.0")
    bits = [float(text.split("entropy ")[1].split()[0]) for text in (before[0], after[0])]
    assert bits[1] > bits[0], f"raising T should raise the entropy: {before[0]} -> {after[0]}"
    print(f"seen: teacher {shown_t} -> {typed_t}, student {shown_s} -> {typed_s}; {before[0]} -> {after[0]}")
    assert hashlib.sha256((ROOT / LESSON).read_bytes()).hexdigest() == before_file  # nothing saved into the repo
