"""The lessons in Binder's environment: a fresh virtual environment built from exactly ``binder/``'s files.

    python benchmarks/binder.py [--venv /tmp/binder-venv] [--quick] [notebooks/05_*.ipynb ...]

It (1) creates the venv and installs ``binder/requirements.txt`` into it, plus the pieces repo2docker's own
base environment supplies (JupyterLab, ipykernel) and the measuring tools (nbclient, psutil); (2) checks that the
torch in it is the ``+cpu`` build and that no CUDA wheel came with it; (3) runs ``binder/postBuild`` against an
empty corpus cache, as the image build does; (4) runs each lesson in a fresh kernel of that venv and samples its
peak resident memory (``benchmarks/notebooks.py``), against Binder's 2 GB limit. Without ``--quick`` the lessons
run at the teaching size (the figures to quote); ``--quick`` sets ``XDLEARN_QUICK=1`` for a smoke run.
An existing venv is reused (``--rebuild`` starts it afresh). Results go to ``benchmarks/results/binder.md``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2000
REPO2DOCKER_BASE = ["jupyterlab==4.6.6", "ipykernel"]   # repo2docker installs these itself, beside requirements.txt
MEASURING = ["nbclient", "nbformat", "psutil"]


def build(venv: Path, rebuild: bool) -> None:
    """Create the venv from binder/requirements.txt (run from the repository root, as repo2docker does)."""
    if rebuild and venv.exists():
        shutil.rmtree(venv)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off"]
        subprocess.run(pip + ["-r", "binder/requirements.txt"], cwd=ROOT, check=True)
        subprocess.run(pip + REPO2DOCKER_BASE + MEASURING, cwd=ROOT, check=True)
    check_cpu_only(venv)
    check_package_is_this_checkout(venv)


def check_package_is_this_checkout(venv: Path) -> None:
    """Fail unless the venv's ``xdlearn`` is this checkout's (a reused venv may point at one since moved or deleted).

    Imported from the filesystem root, so the current directory cannot stand in for the installed package.
    """
    found = subprocess.run([str(venv / "bin" / "python"), "-c", "import xdlearn; print(xdlearn.__file__)"],
                           capture_output=True, text=True, cwd="/").stdout.strip()
    if not found or ROOT not in Path(found).resolve().parents:
        raise SystemExit(f"{venv}: its xdlearn is {found or 'not importable'}, not this checkout's ({ROOT}); "
                         "rerun with --rebuild")


def check_cpu_only(venv: Path) -> None:
    """Fail unless torch is the +cpu build and no nvidia-* (CUDA) package is installed."""
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    torch = [line for line in listing if line.lower().startswith("torch==")]
    cuda = [line for line in listing if line.lower().startswith(("nvidia-", "triton"))]
    if not torch or not torch[0].endswith("+cpu") or cuda:
        raise SystemExit(f"{venv}: expected torch==...+cpu and no CUDA packages, found {torch} and {cuda}")
    print(f"{venv}: {torch[0]}, no CUDA packages ({len(listing)} packages in all)", flush=True)


def environment(venv: Path, cache: Path, quick: bool) -> dict:
    """The variables a Binder session has: the venv first on PATH, the corpus cache postBuild filled."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "XDLEARN_QUICK")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               XDLEARN_CACHE=str(cache))
    if quick:
        env["XDLEARN_QUICK"] = "1"
    return env


def check_kernel() -> None:
    """Inside the venv: the ``python3`` kernel the lessons get must be this venv's Python, not another one."""
    from jupyter_client.kernelspec import KernelSpecManager
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    python = Path(shutil.which(argv0) or argv0).absolute()
    if not python.is_relative_to(Path(sys.prefix)):
        raise SystemExit(f"the python3 kernel runs {python}, not the Python of {sys.prefix}")


def measure(paths: list[Path], out: Path) -> None:
    """Inside the venv: run each lesson with benchmarks/notebooks.py's sampler and write the table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from notebooks import run
    check_kernel()
    rows = []
    for path in paths:
        row = run(path.resolve())
        row["ok"] = row["error"] is None and row["peak_mb"] <= BINDER_LIMIT_MB
        rows.append(row)
        print(f"{row['notebook']:40s} {row['seconds']:6.0f} s {row['peak_mb']:6.0f} MB "
              f"{'ok' if row['ok'] else row['error'] or 'OVER 2 GB'}", flush=True)
    size = "smoke size (XDLEARN_QUICK=1)" if os.environ.get("XDLEARN_QUICK") else "teaching size"
    lines = [f"# Lessons in the Binder environment ({sys.prefix}, torch {torch.__version__}, {size})", "",
             f"Binder's memory limit: {BINDER_LIMIT_MB} MB. Peak = the kernel's largest resident set.", "",
             "| notebook | wall s | peak MB | largest cell peak | status |", "|---|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['seconds']:.0f} | {r['peak_mb']:.0f} | {r['biggest_cell']} | "
              f"{'within 2 GB' if r['ok'] else r['error'] or 'over 2 GB'} |" for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")
    if not all(r["ok"] for r in rows):
        raise SystemExit("some lesson failed or went over Binder's memory limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/binder-venv"))
    parser.add_argument("--cache", type=Path, default=None, help="corpus cache (default: VENV/xdlearn-cache)")
    parser.add_argument("--quick", action="store_true", help="smoke size (XDLEARN_QUICK=1)")
    parser.add_argument("--rebuild", action="store_true", help="delete and rebuild the venv")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "binder.md")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # phase 2, inside the venv
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.measure:
        return measure(paths, args.out)
    venv, cache = args.venv.resolve(), (args.cache or args.venv / "xdlearn-cache").resolve()
    build(venv, args.rebuild)
    env = environment(venv, cache, args.quick)
    shutil.rmtree(cache, ignore_errors=True)  # postBuild must fetch the corpus itself, as in a fresh image
    subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, check=True)
    subprocess.run([str(venv / "bin" / "python"), __file__, "--measure", "--out", str(args.out),
                    *map(str, paths)], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
