"""How fast ``xdlearn.train.fit`` trains, against ``transformers.Trainer`` and a bare PyTorch loop, in one run.

    python benchmarks/training.py [--examples 1024] [--batch-size 32] [--epochs 1] [--repeats 2]
                                  [--variants [optimizer threads compile embeddings dropout]] [--out benchmarks/results/training.md]

Every method trains a freshly loaded MiniLM-L6 (``models.load_pretrained``, same seed) on the same tweets (a random
sample of the training split of ``data.domain_splits``, tokenised once before any clock starts), with fit's defaults
for learning rate, weight decay, warm-up and gradient clipping, and is then tested on the same 500 held-out tweets:
the accuracies show that the methods did the same job. Methods run round-robin, ``--repeats`` times each, and the
faster repeat counts. Seconds are the wall time of the whole call a user makes (``fit(...)``; ``Trainer(...)`` and
``.train()``; the bare loop with its loader, optimiser and schedule).

FLOPs. Training costs 6 FLOPs per parameter per token (forward 2N, backward 4N). N counts the encoder's parameters
(every token meets them); the pooler and classifier see one token per sentence, so they count 6 x N_head per
sentence; embeddings are looked up, not multiplied. Attention adds a term that grows with the sentence length s:
QK^T and softmax x V take 2 s d FLOPs each per token and layer forward, three times that forward and backward, so
12 L d s per token (L layers of width d). Useful FLOPs use each sentence's own length; computed FLOPs use the padded
width of its batch. ``xdlearn.flops.training_flops`` counts the FLOPs torch actually dispatches on one batch as a
cross-check. The machine's limit is a float32 matmul with fit's threads (all cores: 2 here) at the model's shapes (a
typical batch's token count x 384 x 1536, x 1536 x 384 and x 384 x 384), best of several repeats, mixed as a layer
mixes them, measured before and after the methods (the better one counts).

``--variants`` also times what fit could do otherwise, each as a ratio to fit: AdamW's for-loop and ``foreach``
updates instead of fit's fused one (through fit's ``optimizer_groups``), one thread instead of all,
``torch.compile`` (its compile time reported apart), the word embeddings frozen (less to update), and no dropout
(no random masks to draw); the last two train another model, so their accuracy is part of the answer.
Every run also times the bare loop's parts (forward, backward, clipping, optimiser step) on one epoch. A benchmark only measures: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import inspect
import json
import os
import platform
import pstats
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import transformers
from torch import nn

from xdlearn import data, evaluate, flops, lesson, models, runtime, train
from xdlearn.objectives import CrossEntropy

ROOT = Path(__file__).resolve().parent.parent
DOMAIN, SEED, TEST_SIZE, VALIDATION_SIZE = "tweets", 0, 500, 100
EXAMPLES, BATCH_SIZE, EPOCHS, REPEATS = 1024, 32, 1, 2
FIT = {name: p.default for name, p in inspect.signature(train.fit).parameters.items()
       if p.default is not inspect.Parameter.empty}  # lr, weight_decay, warmup, max_grad_norm, max_length
MATMUL_CALLS, MATMUL_REPEATS = 20, 7            # one timing = 20 products; best of 7 timings
COMPILE_TIMEOUT = 900                           # seconds a torch.compile warm-up may take before it counts as failed
INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR"
VARIANTS = ("optimizer", "threads", "compile", "embeddings", "dropout")
BASELINE = "xdlearn fit"
FIT_SHARED = ("lr", "weight_decay", "warmup", "max_grad_norm", "max_length")  # fit's defaults every method uses
BASE_METHODS = (BASELINE, "Trainer (defaults)", "Trainer (group by length)", "bare PyTorch loop")


class Setup:
    """What every method shares: the tokenised training sample, the test set, the tokenizer, the sizes."""

    def __init__(self, examples: int, batch_size: int, epochs: int):
        split = data.domain_splits([DOMAIN], seed=SEED, test_size=TEST_SIZE, validation_size=VALIDATION_SIZE)[DOMAIN]
        self.tokenizer = models.load_tokenizer()
        sample = data.sample_labels(split["train"], examples, seed=SEED, balanced=False)
        self.train = data.tokenize(sample, self.tokenizer, FIT["max_length"])
        self.test = split["test"]
        self.batch_size, self.epochs = batch_size, epochs
        self.lengths = [len(ids) for ids in self.train["input_ids"]]

    def loader(self):
        """The loader ``fit`` builds from this data (length-grouped, dynamic padding, seeded)."""
        return train.as_loader(self.train, self.tokenizer, self.batch_size, SEED, FIT["max_length"], shuffle=True)

    def steps(self) -> int:
        """Optimiser steps of the whole run, for schedules built outside ``fit``."""
        return self.epochs * len(self.loader())


class TokenCounter:
    """Counts what a model is trained on (sentences, real and padded tokens, batch shapes), whoever calls it.

    A forward pre-hook sees the same inputs under fit, Trainer and the bare loop; evaluation passes are skipped.
    """

    def __init__(self, model: nn.Module):
        self.sentences, self.real, self.computed, self.shapes = 0, 0, 0, []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not module.training or torch.compiler.is_compiling():
            return
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        self.sentences += ids.shape[0]
        self.real += int(mask.sum())
        self.computed += ids.numel()
        self.shapes.append(tuple(ids.shape))

    def counts(self) -> dict:
        """The totals, after detaching the hook."""
        self.handle.remove()
        return {"sentences": self.sentences, "real_tokens": self.real, "computed_tokens": self.computed,
                "batch_shapes": self.shapes}


def fresh_model() -> nn.Module:
    """MiniLM with its classification head drawn from ``SEED``: every method starts from the same weights."""
    return models.load_pretrained(labels=data.BINARY, seed=SEED)[0]


def fit_kwargs(setup: Setup) -> dict:
    """The arguments every ``fit`` call gets; the rest are fit's defaults."""
    return {"tokenizer": setup.tokenizer, "epochs": setup.epochs, "batch_size": setup.batch_size, "seed": SEED,
            "progress": False}


def run_fit(setup: Setup, model: nn.Module) -> dict:
    """``xdlearn.train.fit`` as a lesson calls it (no evaluation set, no checkpoints, no progress bar)."""
    train.fit(model, setup.train, **fit_kwargs(setup))
    return {}


def trainer_options(setup: Setup, grouped: bool) -> dict:
    """The TrainingArguments we set (all others stay Trainer's defaults): fit's hyperparameters, CPU, no extras."""
    options = {"use_cpu": True, "report_to": [], "seed": SEED,             # where and how to run
               "save_strategy": "no",                  # fit writes no checkpoint unless given a checkpoint_dir
               "disable_tqdm": True,                   # fit runs with progress=False
               "num_train_epochs": setup.epochs, "per_device_train_batch_size": setup.batch_size,
               "learning_rate": FIT["lr"], "weight_decay": FIT["weight_decay"],  # fit's defaults from here on
               "warmup_steps": int(FIT["warmup"] * setup.steps()), "max_grad_norm": FIT["max_grad_norm"]}
    if grouped:
        names = inspect.signature(transformers.TrainingArguments).parameters
        options.update({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names
                       else {"group_by_length": True})
    return options


def trainer_runner(grouped: bool) -> Callable[[Setup, nn.Module], dict]:
    """``transformers.Trainer`` on the same tokenised data; it pads each batch itself (DataCollatorWithPadding)."""
    def run(setup: Setup, model: nn.Module) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            args = transformers.TrainingArguments(output_dir=folder, **trainer_options(setup, grouped))
            trainer = transformers.Trainer(model=model, args=args, train_dataset=setup.train,
                                           processing_class=setup.tokenizer)
            trainer.train()
        sampler = getattr(args, "train_sampling_strategy", "group_by_length" if grouped else "random")
        return {"optimizer": str(getattr(args.optim, "value", args.optim)), "sampler": sampler}
    return run


def bare_loop_parts(setup: Setup, model: nn.Module, epochs: int) -> tuple:
    """fit's loader, fused AdamW over fit's groups and fit's schedule, seeded as fit seeds: all but fit's loop."""
    runtime.set_seed(SEED)
    loader = setup.loader()
    optimizer = torch.optim.AdamW(train.parameter_groups(model, FIT["lr"], FIT["weight_decay"]), lr=FIT["lr"],
                                  fused=True)
    total = epochs * len(loader)
    return loader, optimizer, train.linear_warmup_decay(optimizer, int(FIT["warmup"] * total), total)


def run_bare_loop(setup: Setup, model: nn.Module) -> dict:
    """Only the loop: fit's loader, AdamW groups, schedule and clipping, so the two differ in nothing but the loop."""
    loader, optimizer, scheduler = bare_loop_parts(setup, model, setup.epochs)
    model.train()
    for epoch in range(setup.epochs):
        loader.batch_sampler.set_epoch(epoch)  # as fit does: each epoch its own shuffle
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), FIT["max_grad_norm"], foreach=True)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    model.eval()
    return {}


OPTIMIZER_VARIANTS = {"for-loop": {"fused": False, "foreach": False}, "foreach": {"fused": False, "foreach": True}}


def optimizer_runner(option: str) -> Callable[[Setup, nn.Module], dict]:
    """``fit`` with another AdamW implementation than its fused one, passed in through fit's ``optimizer_groups``.

    torch's AdamW reads ``foreach`` and ``fused`` from each parameter group at every step (fused wins when both are
    set), so a group saying ``fused=False`` runs the for-loop or foreach update although fit asks for fused.
    """
    def run(setup: Setup, model: nn.Module) -> dict:
        groups = train.parameter_groups(model, FIT["lr"], FIT["weight_decay"])
        options = OPTIMIZER_VARIANTS[option]
        train.fit(model, setup.train, optimizer_groups=[{**g, **options} for g in groups], **fit_kwargs(setup))
        return {}
    return run


def threads_runner(threads: int) -> Callable[[Setup, nn.Module], dict]:
    """``fit`` with torch limited to ``threads`` intra-op threads (restored afterwards)."""
    def run(setup: Setup, model: nn.Module) -> dict:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            train.fit(model, setup.train, **fit_kwargs(setup))
        finally:
            torch.set_num_threads(before)
        return {"threads": threads}
    return run


def run_frozen_embeddings(setup: Setup, model: nn.Module) -> dict:
    """``fit`` with the word-embedding matrix frozen: no dense 30,522-row gradient, clipping or AdamW update for it.

    Not the same training (the embeddings no longer move), so its accuracy is part of the answer.
    """
    model.get_input_embeddings().weight.requires_grad_(False)
    train.fit(model, setup.train, **fit_kwargs(setup))
    return {}


def run_without_dropout(setup: Setup, model: nn.Module) -> dict:
    """``fit`` with every dropout probability at 0: what drawing the dropout masks costs on a CPU, and buys.

    BERT's attention passes its ``nn.Dropout``'s ``p`` to the attention kernel at every call, so this covers it too.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    train.fit(model, setup.train, **fit_kwargs(setup))
    return {}


PHASES = ("next batch", "forward + loss", "backward", "clip gradients", "optimizer step", "schedule + zero_grad")


def phase_profile(setup: Setup) -> dict:
    """The bare loop on a fresh model with a clock between its moves: where one epoch's seconds go.

    On a CPU every torch call returns when its work is done, so the clock between two calls times the first.
    """
    model, clock = fresh_model(), dict.fromkeys(PHASES, 0.0)
    loader, optimizer, scheduler = bare_loop_parts(setup, model, epochs=1)
    model.train()
    marks = [time.perf_counter()]
    for batch in loader:
        marks.append(time.perf_counter())                  # next batch
        loss = model(**batch).loss
        marks.append(time.perf_counter())                  # forward + loss
        loss.backward()
        marks.append(time.perf_counter())                  # backward
        nn.utils.clip_grad_norm_(model.parameters(), FIT["max_grad_norm"], foreach=True)
        marks.append(time.perf_counter())                  # clip gradients
        optimizer.step()
        marks.append(time.perf_counter())                  # optimizer step
        scheduler.step()
        optimizer.zero_grad()
        marks.append(time.perf_counter())                  # schedule + zero_grad
        for name, (start, end) in zip(PHASES, zip(marks[-7:-1], marks[-6:])):
            clock[name] += end - start
        marks = marks[-1:]
    del model, optimizer
    runtime.release_memory()
    return clock


TOP_CALLS = 10   # the calls that take most of fit's own seconds, listed in the results


def top_calls(setup: Setup) -> list[dict]:
    """One ``fit`` epoch under cProfile: the calls with the most time of their own (torch kernels show as built-ins)."""
    model, profiler = fresh_model(), cProfile.Profile()
    profiler.enable()
    run_fit(setup, model)
    profiler.disable()
    stats = pstats.Stats(profiler).stats   # (file, line, name) -> (calls, primitive calls, own s, cumulative s, ...)
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:TOP_CALLS]
    total = sum(own for _, (_, _, own, _, _) in stats.items())
    del model
    runtime.release_memory()
    return [{"call": name if file == "~" else f"{Path(file).name}:{line} {name}", "calls": calls,
             "seconds": own, "share": own / total} for (file, line, name), (calls, _, own, _, _) in rows]


def _timeout(signum, frame):
    raise TimeoutError(f"torch.compile warm-up took over {COMPILE_TIMEOUT} s")


@contextlib.contextmanager
def empty_compile_cache():
    """An empty on-disk inductor cache and a reset dynamo: every repeat pays what a first compile pays."""
    before = os.environ.get(INDUCTOR_CACHE)
    with tempfile.TemporaryDirectory() as folder:
        os.environ[INDUCTOR_CACHE] = folder
        torch._dynamo.reset()
        try:
            yield
        finally:
            torch._dynamo.reset()
            if before is None:
                os.environ.pop(INDUCTOR_CACHE, None)
            else:
                os.environ[INDUCTOR_CACHE] = before


def compile_warm_up(setup: Setup, compiled: nn.Module, model: nn.Module) -> float:
    """Seconds to compile: forward and backward on two batches as fit's objective runs them, gradients dropped.

    No optimiser step is taken, so the weights are untouched (and fit reseeds, so dropout is too).
    """
    objective, batches = CrossEntropy(), iter(setup.loader())
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(COMPILE_TIMEOUT)
    started = time.perf_counter()
    try:
        compiled.train()
        for _ in range(2):
            objective(compiled, next(batches))["loss"].backward()
            model.zero_grad(set_to_none=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return time.perf_counter() - started


def run_compiled(setup: Setup, model: nn.Module) -> dict:
    """``fit`` on ``torch.compile(model, dynamic=True)`` (batches vary in width), compiled in a warm-up first.

    The warm-up's seconds are returned as ``untimed_seconds``: ``measure`` reports them apart, not in the run's time.
    """
    with empty_compile_cache():
        compiled = torch.compile(model, dynamic=True)
        compile_seconds = compile_warm_up(setup, compiled, model)
        train.fit(compiled, setup.train, **fit_kwargs(setup))
    return {"compile_seconds": compile_seconds, "untimed_seconds": compile_seconds}


def methods(variants: list[str]) -> dict[str, Callable[[Setup, nn.Module], dict]]:
    """The methods to time, by name: the four comparisons, then the requested variants of fit."""
    out = dict(zip(BASE_METHODS, (run_fit, trainer_runner(False), trainer_runner(True), run_bare_loop)))
    if "optimizer" in variants:
        out["fit + AdamW for-loop (torch's CPU default)"] = optimizer_runner("for-loop")
        out["fit + AdamW foreach=True"] = optimizer_runner("foreach")
    if "threads" in variants:
        out["fit, 1 thread"] = threads_runner(1)
    if "compile" in variants:
        out["fit + torch.compile"] = run_compiled
    if "embeddings" in variants:
        out["fit, word embeddings frozen"] = run_frozen_embeddings
    if "dropout" in variants:
        out["fit, no dropout"] = run_without_dropout
    return out


def measure(setup: Setup, runner: Callable[[Setup, nn.Module], dict]) -> dict:
    """Train a fresh model with one method; its wall time, what it trained on, and its test accuracy."""
    model = fresh_model()
    counter = TokenCounter(model)
    threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        extra = runner(setup, model)
    except Exception as err:  # a variant that does not work here is reported, not fatal
        counter.counts()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    finally:
        torch.set_num_threads(threads)  # whatever a method changed, the next one starts as this one did
    seconds = time.perf_counter() - started - extra.pop("untimed_seconds", 0.0)  # e.g. compiling, reported apart
    accuracy = evaluate.evaluate(model, setup.test, setup.tokenizer)["accuracy"]
    del model
    runtime.release_memory()
    return {"seconds": seconds, "accuracy": accuracy, **counter.counts(), **extra}


def model_shape(model: nn.Module) -> dict:
    """The numbers the FLOP estimate needs: per-token and per-sentence parameters, layers, width."""
    per_token = sum(p.numel() for n, p in model.named_parameters() if ".encoder." in n)
    embedding = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in n)
    per_sentence = models.count_parameters(model) - per_token - embedding  # pooler + classifier
    return {"token_parameters": per_token, "sentence_parameters": per_sentence, "embedding_parameters": embedding,
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
            "intermediate": model.config.intermediate_size}


def estimated_flops(shape: dict, sequences: list[tuple[int, int]]) -> float:
    """Training FLOPs of ``count`` sequences of ``length`` tokens each: 6N per token + attention + 6 N_head."""
    total = 0.0
    for count, length in sequences:
        per_sequence = (6 * shape["token_parameters"] * length + 6 * shape["sentence_parameters"]
                        + 12 * shape["layers"] * shape["hidden"] * length * length)
        total += count * per_sequence
    return total


def cross_check(setup: Setup, shape: dict) -> dict:
    """FLOPs torch dispatches on one median-width batch of fit's loader, against the estimate at that width."""
    batches = setup.loader().batch_sampler.batches()
    batches.sort(key=lambda rows: max(setup.lengths[i] for i in rows))
    rows = batches[len(batches) // 2]
    width = max(setup.lengths[i] for i in rows)
    model = fresh_model()
    counted = flops.training_flops(model, setup.train.select(rows), tokenizer=setup.tokenizer,
                                   batch_size=len(rows), max_length=FIT["max_length"]) * len(rows)
    estimate = estimated_flops(shape, [(len(rows), width)])
    return {"batch": [len(rows), width], "counted": counted, "estimated": estimate, "estimated_over_counted":
            estimate / counted, "six_n_only": 6 * shape["token_parameters"] * len(rows) * width}


def best_matmul(rows: int, inner: int, cols: int) -> float:
    """FLOP/s of (rows x inner) @ (inner x cols), float32: the best of ``MATMUL_REPEATS`` timings, the least disturbed."""
    a, b, out = torch.randn(rows, inner), torch.randn(inner, cols), torch.empty(rows, cols)
    torch.mm(a, b, out=out)  # warm-up: first call pays for allocation and dispatch
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        started = time.perf_counter()
        for _ in range(MATMUL_CALLS):
            torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * rows * inner * cols * MATMUL_CALLS / best


def matmul_peak(tokens: int, shape: dict, threads: int) -> dict:
    """The machine's limit at the model's shapes, and mixed as one layer mixes them (4 d x d, d x 4d, 4d x d)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    d, ff = shape["hidden"], shape["intermediate"]
    try:
        rates = {f"{tokens}x{d}x{d}": best_matmul(tokens, d, d), f"{tokens}x{d}x{ff}": best_matmul(tokens, d, ff),
                 f"{tokens}x{ff}x{d}": best_matmul(tokens, ff, d)}
    finally:
        torch.set_num_threads(before)
    work = {f"{tokens}x{d}x{d}": 4 * d * d, f"{tokens}x{d}x{ff}": d * ff, f"{tokens}x{ff}x{d}": ff * d}
    mixed = sum(work.values()) / sum(work[k] / rates[k] for k in work)  # time-weighted, as a layer spends it
    return {"tokens": tokens, "threads": threads, "flops_per_second": rates, "layer_mix": mixed}


def write_results(out: Path, lines: list[str], result: dict) -> None:
    """The results table as markdown and every number as JSON beside it, then the table on the console."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print("\n".join(lines))
    print(f"written {out} and {out.with_suffix('.json')}")


def machine() -> dict:
    """What the run ran on, recorded before any work so the load average is the machine's, not ours."""
    return {"node": platform.node() or "this machine", "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "load_before_start": os.getloadavg()}


def warm_up(setup: Setup, todo: dict) -> None:
    """Each method once on one batch, untimed: the first timed run must not pay for lazy imports and kernel set-up."""
    small = copy.copy(setup)
    small.train = setup.train.select(range(min(setup.batch_size, len(setup.train))))
    small.lengths, small.epochs = setup.lengths[:len(small.train)], 1
    for name, runner in todo.items():
        runner(small, fresh_model())
    runtime.release_memory()


def time_methods(setup: Setup, todo: dict, repeats: int) -> dict[str, dict]:
    """Every method ``repeats`` times, round-robin (a burst of load hits all alike); keep each one's faster run."""
    runs: dict[str, list[dict]] = {name: [] for name in todo}
    for repeat in range(repeats):
        for name, runner in todo.items():
            row = measure(setup, runner)
            runs[name].append(row)
            print(f"repeat {repeat + 1}/{repeats} {name:28s} "
                  + (row["error"] if "error" in row else f"{row['seconds']:7.1f} s  accuracy {row['accuracy']:.3f}"),
                  flush=True)
    best = {}
    for name, rows in runs.items():
        done = [r for r in rows if "error" not in r]
        best[name] = min(done, key=lambda r: r["seconds"]) if done else rows[-1]
        best[name]["repeats"] = [r.get("seconds") for r in rows]
        best[name]["median_seconds"] = statistics.median(r["seconds"] for r in done) if done else None
    return best


def add_rates(rows: dict[str, dict], shape: dict, epochs: int, lengths: list[int]) -> None:
    """Examples/s, tokens/s, ratios to fit and FLOP/s for every row (the compiled model is counted like fit's)."""
    useful = estimated_flops(shape, [(1, n) for n in lengths]) * epochs
    base = rows[BASELINE]
    for row in rows.values():
        if "error" in row:
            continue
        if row["sentences"] == 0:  # torch.compile traced the counting hook away; same loader as fit
            row.update({k: base[k] for k in ("sentences", "real_tokens", "computed_tokens", "batch_shapes")})
        computed = estimated_flops(shape, [(b, w) for b, w in row["batch_shapes"]])
        row.update({"examples_per_second": row["sentences"] / row["seconds"],
                    "tokens_per_second": row["real_tokens"] / row["seconds"],
                    "padding_share": 1 - row["real_tokens"] / row["computed_tokens"],
                    "useful_flops_per_second": useful / row["seconds"],
                    "computed_flops_per_second": computed / row["seconds"]})
    for row in rows.values():
        if "error" not in row:
            row["ratio_to_fit"] = row["examples_per_second"] / base["examples_per_second"]


def typical_tokens(setup: Setup) -> int:
    """Padded token count (batch x width) of the median batch fit trains on: the matmuls' row count."""
    sizes = [len(rows) * max(setup.lengths[i] for i in rows) for rows in setup.loader().batch_sampler.batches()]
    return int(statistics.median(sizes))


WHAT_FIT_DOES = [
    "- **Length-grouped batches** (`data.LengthGroupedBatchSampler`): shuffled indices cut into chunks of 50 batches, "
    "each chunk sorted by length, the batches shuffled; padding per batch only. Trainer does the same only with "
    "`group_by_length`; by default it pads random batches. The bare loop here uses fit's own loader.",
    "- **A per-step history**: every step reads the loss (`loss.item()`), the learning rate and the batch accuracy "
    "(argmax of the logits) into `History.steps`; `History.epochs` gets loss, seconds and examples/s per epoch.",
    "- **Objectives** (`objectives.Objective`: cross-entropy, distillation, masked LM, domain-adversarial), with "
    "the objective's own parameters in the optimiser and `set_progress` told before every step; `regularizers` "
    "(callables `model -> loss`) added to the loss.",
    "- **Per-epoch evaluation** on one or several named sets (`eval_data`), accuracy, macro-F1 and ECE.",
    "- **Checkpoints and exact resume** (`checkpoint_dir`, `resume`): model, objective, optimiser, schedule, history "
    "and RNG states written atomically after every epoch; a resumed run sees the same batches and dropout masks.",
    "- **Strategies**: `optimizer_groups` (e.g. layer-wise learning rates) and `unfreezing` (told the step before "
    "every update); a `monitor` (e.g. a live plot) called after every step and epoch; a tqdm bar (off here).",
    "- **Accelerate**: under `torchrun` it shards batches and averages gradients; on one CPU process it is a no-op.",
    "- **Memory**: after training it drops the optimiser and returns freed heap pages to the OS (`release_memory`).",
    f"- It seeds Python, NumPy and torch itself (`set_seed`) and clips gradients to norm {FIT['max_grad_norm']}, "
    "as Trainer does by default and the bare loop here does too.",
]


def markdown(result: dict) -> list[str]:
    """The results file: machine, settings, the table, the limit of the machine, FLOPs, and what fit does."""
    m, s, shape = result["machine"], result["settings"], result["model"]
    lines = [f"# Training loop speed ({m['node']}, {m['cpus']} cores, load before start "
             f"{m['load_before_start'][0]:.1f})", "",
             f"Machine: {m['platform']}, {m['processor']}, {m['cpus']} CPUs; torch {m['torch']} "
             f"({m['torch_threads']} threads), transformers {m['transformers']}; load average before start "
             f"{', '.join(f'{x:.2f}' for x in m['load_before_start'])} (1, 5, 15 min).", "",
             f"MiniLM-L6 fine-tuned on {s['examples']} {DOMAIN} (sample of the training split, tokenised once, "
             f"{s['real_tokens']:,} non-padding tokens), batch {s['batch_size']}, {s['epochs']} epoch(s), seed {SEED}; "
             f"lr {FIT['lr']}, weight decay {FIT['weight_decay']}, warm-up {FIT['warmup']:.0%} of the steps, "
             f"gradient norm clipped to {FIT['max_grad_norm']}; accuracy on {TEST_SIZE} held-out {DOMAIN}. "
             f"Seconds: the faster of {s['repeats']} round-robin repeat(s), each on a freshly loaded model, "
             "the whole call a user makes (rates and ratios use it); 'median s' and 'median ratio' use the median "
             "of the repeats instead. Every method sees the same examples, so the ratio to fit is the same "
             "for examples/s and tokens/s.", ""]
    lines += table(result["methods"], result["matmul"]["layer_mix"])
    fit_row, bare = result["methods"][BASELINE], result["methods"].get("bare PyTorch loop", {})
    if "accuracy" in bare and bare["accuracy"] == fit_row["accuracy"]:
        lines += ["", f"`fit` and the bare loop end at the same test accuracy ({fit_row['accuracy']:.3f}): the same "
                  "batches, schedule, clipping and dropout masks, so the only difference between them is the work "
                  "`fit` does around the loop (below)."]
    lines += [""] + flops_section(result, shape) + [""] + phases_section(result)
    lines += ["", "## Settings of each method", ""] + settings_section(result)
    lines += ["", "## What `fit` does that the others do not", ""] + WHAT_FIT_DOES
    return lines


def table(rows: dict[str, dict], limit: float) -> list[str]:
    """One row per method: seconds, rates, ratio to fit, padding, share of the matmul limit, accuracy."""
    out = ["| method | seconds | median s | examples/s | tokens/s | ratio to fit | median ratio | padding "
           "| useful FLOP/s | share of limit | accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base_median = rows[BASELINE].get("median_seconds")
    for name, r in rows.items():
        if "error" in r:
            out.append(f"| {name} | failed: {r['error']} | | | | | | | | | |")
            continue
        note = f" (+ {r['compile_seconds']:.0f} s compiling)" if "compile_seconds" in r else ""
        median = r.get("median_seconds")
        median_ratio = f"{base_median / median:.2f}" if median and base_median else ""
        out.append(f"| {name} | {r['seconds']:.1f}{note} | {median or 0:.1f} | {r['examples_per_second']:.1f} | "
                   f"{r['tokens_per_second']:,.0f} | {r['ratio_to_fit']:.2f} | {median_ratio} | "
                   f"{r['padding_share']:.0%} | "
                   f"{r['useful_flops_per_second'] / 1e9:.1f} G | {r['useful_flops_per_second'] / limit:.0%} | "
                   f"{r['accuracy']:.3f} |")
    return out


def flops_section(result: dict, shape: dict) -> list[str]:
    """The machine's matmul limit, the share of it fit reaches, and the FLOP count's cross-check."""
    peak, check, fit_row = result["matmul"], result["flops_check"], result["methods"][BASELINE]
    rates = ", ".join(f"{k}: {v / 1e9:.1f} G" for k, v in peak["flops_per_second"].items())
    return ["## The machine's limit", "",
            f"float32 matmul, {peak['threads']} threads, {peak['tokens']} rows (the padded tokens of fit's median "
            f"batch), best of {MATMUL_REPEATS} x {MATMUL_CALLS} products: {rates} FLOP/s; mixed as a layer mixes "
            f"them: **{peak['layer_mix'] / 1e9:.1f} GFLOP/s**.", "",
            f"`fit` reaches {fit_row['useful_flops_per_second'] / 1e9:.1f} GFLOP/s on non-padding tokens, "
            f"**{fit_row['useful_flops_per_second'] / peak['layer_mix']:.0%} of that limit** "
            f"({fit_row['computed_flops_per_second'] / 1e9:.1f} GFLOP/s, "
            f"{fit_row['computed_flops_per_second'] / peak['layer_mix']:.0%}, counting the padding it computes).", "",
            f"FLOPs per token = 6 x N + 12 x L x d x s: N = {shape['token_parameters']:,} encoder parameters "
            f"(embeddings, {shape['embedding_parameters']:,}, are looked up, not multiplied), L = {shape['layers']} "
            f"layers, d = {shape['hidden']}, s = the sentence's length (QK^T and softmax x V, forward and backward); "
            f"plus 6 x {shape['sentence_parameters']:,} per sentence for the pooler and classifier, which see only "
            "the first token. Useful FLOPs use each sentence's own length, computed FLOPs its batch's padded width.", "",
            f"Cross-check on one batch of fit's loader ({check['batch'][0]} sentences padded to {check['batch'][1]} "
            f"tokens): `xdlearn.flops.training_flops` counts {check['counted'] / 1e9:.2f} GFLOP, the estimate gives "
            f"{check['estimated'] / 1e9:.2f} GFLOP ({check['estimated_over_counted']:.2f}x the count; 6N alone "
            f"{check['six_n_only'] / 1e9:.2f} GFLOP)."]


ADAMW_BYTES_PER_PARAMETER = 7 * 4   # fused AdamW reads weight, gradient and both moments, writes weight and moments


def phases_section(result: dict) -> list[str]:
    """Where one epoch of the bare loop spends its time, with the rate each part reaches."""
    p = result["phases"]
    seconds, flops_epoch, limit = p["seconds"], p["epoch_flops"], result["matmul"]["layer_mix"]
    rates = {"forward + loss": flops_epoch / 3 / seconds["forward + loss"],   # 2N of 6N per token: a third
             "backward": 2 * flops_epoch / 3 / seconds["backward"]}            # 4N: two thirds
    steps = result["settings"]["steps_per_epoch"]
    moved = ADAMW_BYTES_PER_PARAMETER * p["trained_parameters"] * steps / seconds["optimizer step"]
    notes = {name: f"{rate / 1e9:.0f} GFLOP/s, {rate / limit:.0%} of the matmul limit" for name, rate in rates.items()}
    notes["optimizer step"] = (f"{p['trained_parameters'] / 1e6:.1f}M weights (word embeddings included) x "
                               f"{ADAMW_BYTES_PER_PARAMETER} bytes: {moved / 1e9:.1f} GB/s of memory traffic")
    total = sum(seconds.values())
    out = ["## Where the time goes", "",
           "The bare loop once more, one epoch on a fresh model, with the clock read between its moves (on a CPU "
           "each torch call returns when its work is done).", "",
           "| part of a step | seconds per epoch | share | rate |", "|---|---|---|---|"]
    out += [f"| {name} | {sec:.2f} | {sec / total:.0%} | {notes.get(name, '')} |" for name, sec in seconds.items()]
    out += [f"| all | {total:.2f} | 100% | |", "", "One `fit` call under cProfile: the calls with the most time of "
            "their own (`{...}` are torch's kernels; backward is one call into autograd's engine).", "",
            "| call | calls | seconds | share of fit |", "|---|---|---|---|"]
    return out + [f"| `{c['call']}` | {c['calls']} | {c['seconds']:.2f} | {c['share']:.0%} |" for c in p["fit_calls"]]


def settings_section(result: dict) -> list[str]:
    """Exactly what each method was given, so the comparison can be judged fair."""
    rows = result["methods"]
    trainer = rows.get("Trainer (defaults)", {})
    out = [f"- `{BASELINE}`: `train.fit(model, data, tokenizer=..., epochs, batch_size, seed={SEED}, "
           "progress=False)`, everything else fit's default (no evaluation set, no checkpoints).",
           f"- Trainer: `TrainingArguments({', '.join(f'{k}={v!r}' for k, v in result['trainer_arguments'].items())})`"
           " and `Trainer(model, args, train_dataset=<the same tokenised data>, processing_class=tokenizer)`. "
           "use_cpu, report_to and seed say where and how to run; lr, batch size, epochs, weight decay, warm-up "
           "steps (fit's int(10% of the steps)) and max_grad_norm are fit's; save_strategy='no' because fit saves "
           "nothing without checkpoint_dir (Trainer's default writes one every 500 steps); disable_tqdm "
           "because fit runs with progress=False. Everything else is Trainer's default: logging every 500 steps, "
           f"no evaluation, optimizer {trainer.get('optimizer', '?')!r}, sampler {trainer.get('sampler', '?')!r} "
           "('group by length' sets train_sampling_strategy='group_by_length', or group_by_length=True on older "
           "transformers).",
           "- Bare loop: fit's loader (`train.as_loader`), `torch.optim.AdamW(train.parameter_groups(...))` (weight "
           "decay except biases and LayerNorm, as fit and Trainer), fit's `train.linear_warmup_decay` schedule, "
           "`clip_grad_norm_(foreach=True)` to fit's max_grad_norm, fused AdamW as fit, `model(**batch).loss` (the model's own cross-entropy)."]
    if result["variants"]:
        out.append("- Variants: AdamW for-loop and foreach through fit's `optimizer_groups` (torch reads both per group); "
                   "`fit(torch.compile(model, dynamic=True))` after a warm-up "
                   "of two forward+backward passes that does the compiling, with an empty compile cache every repeat "
                   "(timed apart, not in the seconds; a warm on-disk cache makes later compiles shorter); "
                   "`torch.set_num_threads(1)` around fit; `get_input_embeddings().weight.requires_grad_(False)` "
                   "before fit (frozen word embeddings); every `nn.Dropout.p` set to 0, attention's included (no dropout). "
                   + "Each variant's ratio is to fit with its defaults; fit's AdamW is the fused one (fused=True), "
                   "the optimizer variants set fused=False per group to time the for-loop (torch's CPU default) "
                   "and foreach updates.")
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=None,
                        help=f"also time variants of fit (default with the flag alone: all of {', '.join(VARIANTS)})")
    parser.add_argument("--methods", nargs="+", choices=BASE_METHODS, default=list(BASE_METHODS), metavar="NAME",
                        help=f"time only these of the four comparisons ({', '.join(map(repr, BASE_METHODS))}); "
                             f"'{BASELINE}' is always timed, every ratio is to it")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training.md")
    args = parser.parse_args()
    args.variants = list(VARIANTS) if args.variants == [] else (args.variants or [])
    return args


def main() -> None:
    args = parse_args()
    lesson.setup(seed=SEED)
    host = machine()
    setup = Setup(args.examples, args.batch_size, args.epochs)
    shape = model_shape(fresh_model())
    tokens = typical_tokens(setup)
    peak = matmul_peak(tokens, shape, torch.get_num_threads())
    chosen = [BASELINE] + [name for name in args.methods if name != BASELINE]
    todo = {name: runner for name, runner in methods(args.variants).items()
            if name in chosen or name not in BASE_METHODS}
    warm_up(setup, {name: todo[name] for name in chosen})
    rows = time_methods(setup, todo, args.repeats)
    phases, calls = phase_profile(setup), top_calls(setup)
    later = matmul_peak(tokens, shape, torch.get_num_threads())  # again after: keep the better of the two
    peak = max(peak, later, key=lambda p: p["layer_mix"])
    add_rates(rows, shape, args.epochs, setup.lengths)
    result = {"machine": host, "model": shape, "matmul": peak, "methods": rows, "variants": args.variants,
              "flops_check": cross_check(setup, shape), "trainer_arguments": trainer_options(setup, grouped=False),
              "settings": {"examples": len(setup.train), "batch_size": args.batch_size, "epochs": args.epochs,
                           "repeats": args.repeats, "real_tokens": sum(setup.lengths),
                           "steps_per_epoch": len(setup.loader()),
                           "fit_defaults": {k: FIT[k] for k in FIT_SHARED}}}
    result["phases"] = {"seconds": phases, "epoch_flops": estimated_flops(shape, rows[BASELINE]["batch_shapes"])
                        / args.epochs, "trained_parameters": models.count_parameters(fresh_model()),
                        "fit_calls": calls}
    for row in rows.values():
        row.pop("batch_shapes", None)
    write_results(args.out, markdown(result), result)


if __name__ == "__main__":
    main()
