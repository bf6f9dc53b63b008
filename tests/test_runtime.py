"""How many threads torch is given: a container's CPU quota, not the host's core count."""
from __future__ import annotations

import os

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
