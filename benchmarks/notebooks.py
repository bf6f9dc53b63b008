"""Wall time and peak memory of every lesson, executed one at a time as CI and a learner run them.

    python benchmarks/notebooks.py [notebooks/05_*.ipynb ...] [--out benchmarks/results/notebooks.md]

Budget (the project's figure for every lesson): each notebook <= 240 s wall and <= 1.8 GB peak RSS on 2 cores, in its
default (teaching) configuration. The kernel's resident memory is sampled every 100 ms.
"""
from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS, BUDGET_MB = 240, 1800


def peak_rss_sampler(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Track the largest resident set of the kernel process (and any children it starts).

    ``peak[0]`` is the peak of the whole run, ``peak[1]`` the peak since the current cell started.
    """
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [proc] + proc.children(recursive=True)
            rss = sum(p.memory_info().rss for p in procs) / 1e6
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], rss)
        except psutil.Error:
            pass
        stop.wait(0.1)


def run(path: Path, save_dir: Path | None = None) -> dict:
    """Execute one notebook in a fresh kernel; return its wall time, peak RSS, slowest and biggest cell."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    stop, peak, error, cells = threading.Event(), [0.0, 0.0], None, []
    started = time.perf_counter()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid
        sampler = threading.Thread(target=peak_rss_sampler, args=(pid, stop, peak), daemon=True)
        sampler.start()
        try:
            for index, cell in enumerate(nb.cells):
                peak[1], cell_started = 0.0, time.perf_counter()
                client.execute_cell(cell, index)
                cells.append((index, time.perf_counter() - cell_started, peak[1]))
        except Exception as err:  # report, then carry on with the next notebook
            error = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if save_dir is not None:  # executed copies for inspection; never into notebooks/
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / path.name)
    slowest = max(cells, key=lambda c: c[1], default=(None, 0.0, 0.0))
    biggest = max(cells, key=lambda c: c[2], default=(None, 0.0, 0.0))
    return {"notebook": path.name, "seconds": seconds, "peak_mb": peak[0], "error": error,
            "slowest_cell": f"cell {slowest[0]}: {slowest[1]:.0f} s", "biggest_cell": f"cell {biggest[0]}: {biggest[2]:.0f} MB",
            "within_budget": error is None and seconds <= BUDGET_SECONDS and peak[0] <= BUDGET_MB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notebooks.md")
    parser.add_argument("--save-executed", type=Path, default=None, help="folder for executed copies")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    rows = []
    for path in paths:
        row = run(path.resolve(), args.save_executed)
        rows.append(row)
        print(f"{row['notebook']:40s} {row['seconds']:6.0f} s {row['peak_mb']:6.0f} MB "
              f"{'ok' if row['within_budget'] else 'OVER BUDGET' if not row['error'] else row['error']}", flush=True)
    lines = [f"# Notebook budgets ({platform.node() or 'this machine'}, {os.cpu_count()} cores, "
             f"load before start {os.getloadavg()[0]:.1f})", "",
             f"Budget: <= {BUDGET_SECONDS} s wall and <= {BUDGET_MB} MB peak RSS per notebook.", "",
             "| notebook | wall s | s / budget | peak MB | MB / budget | slowest cell | largest cell peak | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        status = r["error"] or ("within budget" if r["within_budget"] else "over budget")
        lines.append(f"| {r['notebook']} | {r['seconds']:.0f} | {r['seconds'] / BUDGET_SECONDS:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] / BUDGET_MB:.2f} | {r['slowest_cell']} | {r['biggest_cell']} "
                     f"| {status} |")
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Total: {total:.0f} s for {len(rows)} notebooks."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
