"""Helpers to kill a real `xdlearn run` with SIGKILL at a chosen point and compare results across runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"wall_seconds", "peak_memory_mb", "examples_per_second", "source_examples_per_second", "speedup",
          "path", "encoder_path"}  # measured speeds and where files went differ between runs; nothing else may
# (wall_seconds, peak_memory_mb and the speeds are measurements of the machine at that moment; speedup is a ratio
# of two speeds; path and encoder_path name the run's own output folder)

KILL_POINTS = {  # name: when to kill, given the output folder and what the run printed so far
    "after the first matrix row": lambda out, printed: (out / ".resume" / "matrix.json").exists(),
    "mid-way through the target fine-tuning": lambda out, printed: (out / ".resume" / "fit-target" /
                                                                     "checkpoint.json").exists(),
    "mid-way through DANN": lambda out, printed: (out / ".resume" / "fit-dann" / "checkpoint.json").exists(),
    "during distillation": lambda out, printed: "distilling into" in printed,
}


def comparable(value):
    """``results.json`` without timings and paths: what two runs of the same settings must agree on exactly."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def command(*args: str, kill_when=None) -> tuple[int, str]:
    """Run ``python -m xdlearn.cli`` with this checkout first on the path; SIGKILL it once ``kill_when(output)`` holds.

    The run is a subprocess so that the kill does not take pytest with it.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "xdlearn.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if kill_when is not None and kill_when("".join(lines)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=600)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines)
