"""How the main job's time grows with the number of domains and the labelled sentences per domain.

    python benchmarks/scaling.py [--domains 2 3 4] [--train-sizes 500 1500] [--out benchmarks/results/scaling.md]

The transfer matrix trains one model per domain and tests each on every domain: its training grows with
domains x sentences, its testing with domains^2 x test sentences. Adapting to the target and distilling a
student do not depend on the number of domains. Each point runs the real ``xdlearn run`` in a process of its
own (so its peak memory is its own) on the first D domains of the built-in corpus, handed to it as your own
data (one CSV file per domain), and times its stages from the progress lines it prints.
Results go to the ``--out`` markdown file, a ``.json`` and a ``.png`` beside it.
A quick run that proves the path (one point, so no fit): ``--domains 2 --train-sizes 100 --test-size 50 --out /tmp/scaling.md``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from training import machine, write_results   # benchmarks/training.py, beside this file
from xdlearn import data

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("movies", "tweets", "editorials", "products")   # source and target first: every run has both
LOG_LINE = re.compile(r"^\[\s*(\d+)s\s+[\d.]+ GB\] (.*)$")   # the job's progress lines: seconds since start, message
MIN_POINTS_TO_FIT = 3   # two unknowns: a fit through fewer points than three says nothing
MATRIX_START, MATRIX_END = "fine-tuning on ", "fine-tuning the "   # first matrix line; first line after the matrix


def write_domains(folder: Path, count: int) -> list[str]:
    """The first ``count`` domains of the corpus as CSV files named after them (class names, not ids)."""
    corpus = data.load_corpus(list(ORDER[:count]))
    paths = []
    for name, ds in corpus.items():
        names = ds.features["label"].names
        table = ds.to_pandas().assign(label=lambda t: [names[i] for i in t["label"]])[["text", "label"]]
        path = folder / f"{name}.csv"
        table.to_csv(path, index=False)
        paths.append(str(path))
    return paths


def stage_seconds(log: str) -> dict[str, float]:
    """Seconds in the transfer matrix and in everything else, read off the job's progress lines."""
    lines = [(float(m.group(1)), m.group(2)) for m in map(LOG_LINE.match, log.splitlines()) if m]
    start = next(t for t, msg in lines if msg.startswith(MATRIX_START))
    end = next(t for t, msg in lines if msg.startswith(MATRIX_END))
    return {"matrix": end - start}


def run_point(domains: int, train_size: int, test_size: int, folder: Path) -> dict:
    """One ``xdlearn run`` on ``domains`` domains with ``train_size`` labels each: wall time, stages, peak memory."""
    files = write_domains(folder, domains)
    out = folder / f"run-{domains}-{train_size}"
    command = [sys.executable, "-m", "xdlearn.cli", "run", "--data", *files, "--label-column", "label",
               "--train-size", str(train_size), "--test-size", str(test_size), "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"xdlearn run failed ({domains} domains, {train_size} labels):\n{done.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    point = {"domains": domains, "train_size": train_size, "seconds": results["wall_seconds"],
             "peak_memory_mb": results["peak_memory_mb"], **stage_seconds(done.stdout)}
    print(point, flush=True)
    return point


def fit_matrix(points: list[dict]) -> dict:
    """Least squares: matrix seconds ~ a * domains * sentences (training) + b * domains^2 (testing every pair)."""
    design = np.array([[p["domains"] * p["train_size"], p["domains"] ** 2] for p in points], dtype=float)
    seconds = np.array([p["matrix"] for p in points])
    (per_sentence, per_pair), *_ = np.linalg.lstsq(design, seconds, rcond=None)
    return {"seconds_per_training_sentence": float(per_sentence), "seconds_per_domain_pair": float(per_pair),
            "predicted": [float(x) for x in design @ np.array([per_sentence, per_pair])]}


def plot(points: list[dict], path: Path) -> None:
    """Total and matrix seconds against the number of domains, one line per training size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for size in sorted({p["train_size"] for p in points}):
        rows = sorted((p for p in points if p["train_size"] == size), key=lambda p: p["domains"])
        line, = ax.plot([p["domains"] for p in rows], [p["seconds"] for p in rows], "o-", label=f"job, {size} labels")
        ax.plot([p["domains"] for p in rows], [p["matrix"] for p in rows], "o--", color=line.get_color(),
                label=f"transfer matrix, {size} labels")
    ax.set(xlabel="domains", ylabel="seconds", title="main job time by domains and labels per domain")
    ax.set_xticks(sorted({p["domains"] for p in points}))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def table(points: list[dict], model: dict, test_size: int, host: dict, figure: str) -> list[str]:
    """The markdown report."""
    lines = [f"# Main job time by domains and labels per domain ({host['cpus']} cores, {host['processor']}, "
             f"torch {host['torch']}, load {host['load_before_start'][0]:.1f} before the start)", "",
             f"`xdlearn run` at its defaults but for the domains (the first D of {', '.join(ORDER)}, as CSV files) "
             f"and `--train-size`; {test_size} test sentences per domain. 'matrix' is the transfer-matrix stage "
             "(one model trained per domain, each tested on every domain), read off the job's progress lines.", "",
             "| domains | labels per domain | job seconds | matrix seconds | matrix share | model's matrix seconds "
             "| peak MB |", "|---|---|---|---|---|---|---|"]
    fitted = model["predicted"] if len(points) >= MIN_POINTS_TO_FIT else [None] * len(points)
    lines += [f"| {p['domains']} | {p['train_size']} | {p['seconds']:.0f} | {p['matrix']:.0f} | "
              f"{p['matrix'] / p['seconds']:.0%} | {'-' if fit is None else f'{fit:.0f}'} | {p['peak_memory_mb']:.0f} |"
              for p, fit in zip(points, fitted)]
    if len(points) >= MIN_POINTS_TO_FIT:
        lines += ["", f"Fitted: matrix seconds = {model['seconds_per_training_sentence'] * 1e3:.1f} ms x domains x "
                  f"labels per domain + {model['seconds_per_domain_pair']:.1f} s x domains^2."]
    lines += ["", f"![main job time]({figure})"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[500, 1500])
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.md")
    args = parser.parse_args()
    if not all(2 <= d <= len(ORDER) for d in args.domains):
        parser.error(f"--domains: each between 2 (a source and a target) and {len(ORDER)}")
    host = machine()
    with tempfile.TemporaryDirectory() as folder:
        points = [run_point(d, n, args.test_size, Path(folder)) for n in args.train_sizes for d in args.domains]
    model = fit_matrix(points)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_suffix(".png")
    plot(points, figure)
    write_results(args.out, table(points, model, args.test_size, host, figure.name),
                  {"machine": host, "points": points, "model": model})


if __name__ == "__main__":
    main()
