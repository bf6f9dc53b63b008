"""The same fit() runs as two processes under torchrun (gloo, CPU): replicas stay identical, the schedule counts
each process's steps, and the result is the one process's with the same global batch."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from xdlearn import data, evaluate, models, train
from conftest import make_tiny_model, toy_sentences

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # same maths whatever the RNG draws
SETTINGS = dict(epochs=4, lr=3e-3, progress=False)
ROWS = 256

SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model, toy_sentences
    from test_distributed import NO_DROPOUT, ROWS, SETTINGS
    from xdlearn import models, train
    model = make_tiny_model(seed=0, **NO_DROPOUT)
    history = train.fit(model, toy_sentences(ROWS), tokenizer=models.load_tokenizer(), batch_size=16, **SETTINGS)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
    if dist.get_rank() == 0:
        from safetensors.torch import save_file
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {weights!r})
    print(f"rank {{dist.get_rank()}} steps {{len(history.steps)}} world {{dist.get_world_size()}} "
          f"lr {{json.dumps([row['lr'] for row in history.steps])}}", flush=True)
    dist.barrier()
    dist.destroy_process_group()  # a process group left for exit to tear down can abort ("terminate called...")
""")


class ConsecutivePairs:
    """The batches two processes take in one step (batches 2k and 2k+1 of the same sampler), as one batch."""

    def __init__(self, inner: data.LengthGroupedBatchSampler):
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self):
        batches = self.inner.batches()
        return iter([batches[i] + batches[i + 1] for i in range(0, len(batches), 2)])

    def __len__(self) -> int:
        return len(self.inner) // 2


def one_process_with_the_same_global_batch(tokenizer):
    """fit in this process on the batches the two processes share out, merged: the global batch of 32."""
    ds = data.tokenize(toy_sentences(ROWS), tokenizer).select_columns(["input_ids", "attention_mask",
                                                                       "token_type_ids", "label"])
    sampler = data.LengthGroupedBatchSampler([len(x) for x in ds["input_ids"]], 16, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=ConsecutivePairs(sampler),
                                         collate_fn=data.PadCollator(tokenizer.pad_token_id))
    model = make_tiny_model(seed=0, **NO_DROPOUT)
    history = train.fit(model, loader, **SETTINGS)
    return model, history


@pytest.mark.slow
def test_fit_under_torchrun_matches_one_process_with_the_same_global_batch(tmp_path, tokenizer):
    from safetensors.torch import load_file
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), weights=str(tmp_path / "ddp.safetensors")))
    with socket.socket() as probe:  # a port nobody else is using right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(port), str(script)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # both processes write to one pipe, so their lines can run together: find the reports anywhere
    reports = sorted(re.findall(r"rank (\d+) steps (\d+) world (\d+) lr (\[[^\]]*\])", result.stdout))
    # 256 rows, batch 16, two processes, four epochs: each process takes 8 of the 16 batches an epoch
    assert [r[:3] for r in reports] == [("0", "32", "2"), ("1", "32", "2")], result.stdout
    single, history = one_process_with_the_same_global_batch(tokenizer)
    # the schedule counts the 32 steps each process takes (3 of warm-up, then down to 1/29 of the peak at the last);
    # sized on the unsharded 64 batches, it would stop half-way down, at 33/58 of the peak
    assert json.loads(reports[0][3]) == pytest.approx([row["lr"] for row in history.steps], rel=1e-9)
    assert history.steps[-1]["lr"] == pytest.approx(3e-3 / 29)
    # the same updates: two half-batch gradients averaged by gloo are the global batch's up to float rounding
    # (the sums run in another order); Adam divides by sqrt(v), so 1e-4 on weights of scale 0.1 is that rounding
    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    worst = max((ddp[k] - v).abs().max().item() for k, v in single.state_dict().items())
    assert worst < 1e-4, worst
    ddp_model = make_tiny_model(seed=0, **NO_DROPOUT)
    ddp_model.load_state_dict(ddp)
    test = toy_sentences(200, seed=7)
    scores = [evaluate.evaluate(m, test, tokenizer)["accuracy"] for m in (ddp_model, single)]
    print(f"torchrun x2 vs one process: largest weight difference {worst:.1e}, test accuracy {scores}")
    assert scores[0] == scores[1] and scores[0] > 0.8, scores
    assert models.count_parameters(single) == models.count_parameters(ddp_model)


def test_an_objective_s_own_parameters_are_optimised_beside_optimizer_groups(tiny_model, tokenizer, toy):
    from test_train import ScaledCrossEntropy
    from xdlearn import strategies
    objective = ScaledCrossEntropy()
    groups = strategies.layerwise_lr_groups(tiny_model, lr=1e-2, decay=0.9)
    train.fit(tiny_model, toy["train"], objective, tokenizer=tokenizer, epochs=1, lr=1e-2, progress=False,
              optimizer_groups=groups)
    assert objective.scale.item() != 1.0  # the objective's parameter was in the optimiser and moved
