"""How many threads torch is given: a container's CPU quota, not the host's core count."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from xdlearn import runtime


def cgroup_files(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    """Write cgroup CPU files as a container would show them; return (v2 path, v1 paths) for available_cores."""
    v2_path, v1_paths = tmp_path / "cpu.max", (tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us")
    if v2 is not None:
        v2_path.write_text(v2 + "\n")
    if v1 is not None:
        for path, text in zip(v1_paths, v1):
            path.write_text(text + "\n")
    return str(v2_path), tuple(str(p) for p in v1_paths)


@pytest.fixture
def many_host_cores(monkeypatch):
    """A host with 64 cores, all in this process's affinity (as Binder and CI containers show them)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)


@pytest.mark.parametrize("v2, v1, expected", [
    ("200000 100000", None, 2),            # cgroup v2: 2 CPUs
    ("150000 100000", None, 1),            # 1.5 CPUs: one thread, not two fighting over one and a half
    ("50000 100000", None, 1),             # half a CPU still gets a thread
    (None, ("400000", "100000"), 4),       # cgroup v1
    ("max 100000", None, 64),              # no quota: every core of the affinity
    (None, ("-1", "100000"), 64),
    (None, None, 64),                      # no cgroup files at all
])
def test_available_cores_is_the_quota_when_the_container_has_one(tmp_path, many_host_cores, v2, v1, expected):
    v2_path, v1_paths = cgroup_files(tmp_path, v2, v1)
    assert runtime.available_cores(v2_path, v1_paths) == expected


def test_a_quota_never_raises_the_count_above_the_cores_of_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    v2_path, v1_paths = cgroup_files(tmp_path, v2="800000 100000")
    assert runtime.available_cores(v2_path, v1_paths) == 2


def test_set_threads_uses_the_environment_variable_then_the_available_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(runtime.THREADS_VARIABLE, "1")
        assert runtime.set_threads() == 1
        monkeypatch.delenv(runtime.THREADS_VARIABLE)
        monkeypatch.setattr(runtime, "available_cores", lambda: 2)
        assert runtime.set_threads() == 2
    finally:
        torch.set_num_threads(before)


def root_conftest():
    """The checkout's root conftest.py, loaded afresh by path (tests/ has a conftest of its own)."""
    spec = importlib.util.spec_from_file_location("root_conftest", Path(__file__).resolve().parent.parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cores, available_kb, expected", [
    (2, 24_000_000, 2),    # this machine: a worker per core
    (8, 6_000_000, 2),     # many cores, 6 GB free: two workers of 2.5 GB each
    (4, 1_000_000, 1),     # short of memory: one worker still runs
])
def test_pytest_n_auto_runs_a_worker_per_core_as_memory_allows(tmp_path, monkeypatch, cores, available_kb, expected):
    root = root_conftest()
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       32000000 kB\nMemFree:          500000 kB\nMemAvailable:   {available_kb} kB\n")
    read = root._free_memory_bytes
    monkeypatch.setattr(root, "_free_memory_bytes", lambda: read(str(meminfo)))
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert root.pytest_xdist_auto_num_workers(config=None) == expected
