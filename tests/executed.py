"""Keep the lessons nbval executes, for the book: ``XDLEARN_SAVE_EXECUTED=<dir>`` (registered by conftest.py).

Every notebook the test run executes is written, executed, to ``<dir>/<notebook name>``, as nbclient would have
written it: nbval reads each cell's kernel messages and keeps only some of them (no ``clear_output``, no display
updates, no widget messages), so this plugin records every message nbval reads and replays the cell's own through
nbclient's message handling. That gives ``clear_output(wait=True)`` redraws, ``update_display`` updates, output
captured by ``Output`` widgets and the widget state (``metadata.widgets``) as the book's own execution
(jupyter-cache, through nbclient) records them. nbval runs cells without history, so each result gets its cell's
execution count here, and a result a trailing ``;`` hides (IPython cannot see the ``;`` without history) is dropped.
Streams of one name are merged, as nbclient's ``coalesce_streams`` does. ``book/build.py --executed <dir>`` builds
the book from these notebooks.

A notebook is written only when every one of its code cells ran and none failed; otherwise its copy in ``<dir>``
is deleted, so a book is never built from a lesson that failed (or ran only in part). Kernels started meanwhile
get ``TQDM_DISABLE=1``, as the book's kernels do: a progress bar is a widget, and would be a leftover on a page.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete
from nbval.plugin import IPyNbCell, IPyNbFile, coalesce_streams

KERNEL_ENVIRONMENT = {"TQDM_DISABLE": "1"}
SIZE_KEY = "xdlearn"   # notebook metadata: {"size": "teaching" | "smoke"}, which build.py puts on the pages


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """``values`` in os.environ for the block (kernels started in it inherit them); the old values after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Run:
    """One notebook as nbval runs it: the copy being filled, nbclient's bookkeeping, and what went wrong."""

    nb: nbformat.NotebookNode
    client: NotebookClient
    code_cells: list[int]                     # the index in nb.cells of each code cell, in nbval's order
    done: set[int] = field(default_factory=set)   # code cells run (or skipped by NBVAL_SKIP)
    executed: int = 0                         # cells run so far: the last one's execution count
    failed: bool = False


def new_run(file: IPyNbFile) -> Run:
    """An output-free copy of the notebook nbval collected, and an nbclient client to replay messages into."""
    nb = copy.deepcopy(file.nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    code_cells = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    return Run(nb=nb, client=NotebookClient(nb, record_timing=False), code_cells=code_cells)  # as jupyter-cache


def replay(run: Run, item: IPyNbCell, messages: list[dict]) -> None:
    """Fill the cell's outputs from the kernel messages of its execution, as nbclient does while it executes."""
    requests = [m["parent_header"].get("msg_id") for m in messages if m["msg_type"] == "execute_input"]
    index = run.code_cells[item.cell_num]
    cell = run.nb.cells[index]
    run.client.kc = item.parent.kernel.kc     # an Output widget's mimic sends its outputs back, as a frontend does
    run.client.clear_before_next_output = False
    for message in messages:
        if requests and message["parent_header"].get("msg_id") == requests[0]:
            try:
                run.client.process_message(message, cell, index)
            except CellExecutionComplete:
                break
    cell.outputs = coalesce_streams(cell.outputs)
    if quiet(cell.source):
        cell.outputs = [output for output in cell.outputs if output.output_type != "execute_result"]
    run.executed += 1
    cell.execution_count = run.executed
    for output in cell.outputs:
        if output.output_type == "execute_result":
            output.execution_count = cell.execution_count   # nbval runs cells without history: all would be 1


def quiet(source: str) -> bool:
    """Whether IPython hides the cell's result (it ends with ``;``): it cannot tell in nbval's runs without history."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.inputtransformer2 import TransformerManager
    return DisplayHook.semicolon_at_end_of_expression(TransformerManager().transform_cell(source))


def size() -> str:
    """The size the lessons ran at: what ``XDLEARN_QUICK`` asked the kernels for."""
    from xdlearn.lesson import quick
    return "smoke" if quick() else "teaching"


class SaveExecuted:
    """The pytest plugin: records each nbval cell's messages, and writes or deletes each notebook when it ends."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.runs: dict[IPyNbFile, Run] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        """A notebook's kernel starts in its first cell's setup: with the book's kernel environment."""
        with environment(KERNEL_ENVIRONMENT if isinstance(item, IPyNbCell) else {}):
            yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        """Record every kernel message nbval reads while it runs the cell; replay them into the copy if it passed."""
        if not isinstance(item, IPyNbCell):
            yield
            return
        file, messages = item.parent, []
        read = type(file).get_kernel_message

        def recording(*args, **kwargs):
            message = read(file, *args, **kwargs)
            messages.append(message)
            return message

        file.get_kernel_message = recording
        try:
            outcome = yield
        finally:
            del file.get_kernel_message
        run = self.runs.setdefault(file, new_run(file))
        if outcome.excinfo is None:
            replay(run, item, messages)
            run.done.add(item.cell_num)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        """Note a notebook whose cell failed in any phase; a skipped cell (``NBVAL_SKIP``) counts as run."""
        outcome = yield
        report = outcome.get_result()
        if isinstance(item, IPyNbCell) and (report.failed or report.skipped):
            run = self.runs.setdefault(item.parent, new_run(item.parent))
            run.failed |= report.failed
            if report.skipped and not report.failed:
                run.done.add(item.cell_num)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        """After a notebook's last cell (its kernel stopped): write it, or delete a stale copy if it did not pass."""
        yield
        if isinstance(item, IPyNbCell) and (nextitem is None or nextitem.parent is not item.parent):
            self.finish(item.parent)

    def finish(self, file: IPyNbFile) -> None:
        """Write the executed notebook with its widget state and size; delete it if a cell failed or did not run."""
        run = self.runs.pop(file, None) or new_run(file)
        target = self.folder / file.path.name
        if run.failed or len(run.done) < len(run.code_cells):
            target.unlink(missing_ok=True)
            return
        run.client.set_widgets_metadata()
        run.nb.metadata[SIZE_KEY] = {"size": size()}
        nbformat.validate(run.nb)
        self.folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(run.nb, target)


def register(config: pytest.Config, folder: str) -> None:
    """Save every notebook this run executes into ``folder`` (conftest.py: when ``XDLEARN_SAVE_EXECUTED`` is set)."""
    config.pluginmanager.register(SaveExecuted(Path(folder).resolve()), "xdlearn-save-executed")
