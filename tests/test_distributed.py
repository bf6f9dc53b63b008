"""The same fit() runs as two processes under torchrun (gloo, CPU) and keeps replicas identical."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model, toy_sentences
    from xdlearn import models, train
    model = make_tiny_model(seed=0)
    history = train.fit(model, toy_sentences(128), tokenizer=models.load_tokenizer(), epochs=1,
                        batch_size=16, lr=1e-3, progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
    print(f"rank {{dist.get_rank()}} steps {{len(history.steps)}} world {{dist.get_world_size()}}", flush=True)
    dist.barrier()
    dist.destroy_process_group()  # a process group left for exit to tear down can abort ("terminate called...")
""")


@pytest.mark.slow
def test_fit_under_torchrun_with_two_processes(tmp_path):
    from pathlib import Path
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    with socket.socket() as probe:  # a port nobody else is using right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(port), str(script)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # both processes write to one pipe, so their lines can run together: find the reports anywhere
    reports = sorted(re.findall(r"rank (\d+) steps (\d+) world (\d+)", result.stdout))
    # 128 rows, batch 16, two processes: each process takes 4 of the 8 batches
    assert reports == [("0", "4", "2"), ("1", "4", "2")], result.stdout
