"""Every student kind, distilled versus trained on labels alone, against its teacher, in one run.

    python benchmarks/students.py [--domain tweets] [--labels 400] [--transfer 1500] [--out benchmarks/results/students.md]

Reports, per student: parameters, MB, how many times fewer FLOPs per sentence it does than the teacher, its
measured speed-up over the teacher at batch 1 (one sentence per call: a deployed classifier's latency) and at
batch 64 (throughput), with the share of the FLOP ratio each speed-up turns into speed, target accuracy as a
fraction of the teacher's, and the gain of distillation over the same student trained on the labels alone.
Figures to reach: a 2-layer student keeps >= 97% at >= 2.8x; BiLSTM/CNN keep >= 90% at >= 15x.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from xdlearn import data, distill, evaluate, flops, lesson, models, students, train

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("3-layer", "2-layer", "narrow", "bilstm", "cnn")   # each trains at students.learning_rate(kind)
TEST_SIZE, VALIDATION_SIZE = 500, 100
SPEED_BATCHES = (1, 64)   # one sentence per call (latency), and a batch of 64 (throughput)
SPEED_REPEATS = 5         # timed passes per model and batch size; each model keeps its fastest


def accuracy(model, test, tokenizer) -> float:
    """Test accuracy."""
    return evaluate.evaluate(model, test, tokenizer)["accuracy"]


def speedups(student, teacher, test, tokenizer) -> dict[int, float]:
    """The student's speed-up over the teacher at each batch size, the two timed in turn on the test sentences."""
    return {size: evaluate.speedup(student, teacher, test, tokenizer, batch_size=size,
                                   repeats=SPEED_REPEATS)["speedup"] for size in SPEED_BATCHES}


def pruned_size(student, tokenizer, texts, test) -> tuple[int, float]:
    """Parameters and MB after vocabulary pruning to the domain's text; refuses if a prediction changed."""
    before = evaluate.predict(student, test, tokenizer).argmax(-1)
    with tempfile.TemporaryDirectory() as folder:
        pruned, pruned_tokenizer = students.prune_vocabulary(student, tokenizer, texts, folder)
        after = evaluate.predict(pruned, test, pruned_tokenizer).argmax(-1)
    if (before != after).any():
        raise RuntimeError("vocabulary pruning changed predictions")
    return models.count_parameters(pruned), models.parameter_bytes(pruned) / 1e6


def teacher_and_transfer_set(domain: str, labels: int, transfer: int, test_size: int = TEST_SIZE):
    """The domain's split, the labelled sample, MiniLM fine-tuned on it, and its cached logits on unlabeled text.

    Returns ``(split, labelled, teacher, tokenizer, transfer_set)``; the seeds are fixed, so every run (and every
    benchmark that imports this) distils from the same teacher.
    """
    split = data.domain_splits([domain], seed=0, test_size=test_size, validation_size=VALIDATION_SIZE)[domain]
    labelled = data.sample_labels(split["train"], labels, seed=0)
    pool = data.unlabeled(data.sample_labels(split["train"], transfer, seed=1, balanced=False))
    teacher, tokenizer = models.load_pretrained(labels=data.BINARY)
    train.fit(teacher, labelled, tokenizer=tokenizer, epochs=3, batch_size=16, progress=False)
    return split, labelled, teacher, tokenizer, distill.cache_teacher_logits(teacher, pool, tokenizer)


def distilled_student(kind: str, teacher, tokenizer, transfer, epochs: int):
    """A student of ``kind`` distilled on the cached teacher logits (T=2, alpha=1) at its kind's learning rate."""
    student = students.make_student(teacher, tokenizer, kind)
    train.fit(student, transfer, distill.Distillation(temperature=2.0, alpha=1.0), tokenizer=tokenizer,
              epochs=epochs, lr=students.learning_rate(kind), progress=False)
    return student


@dataclass
class Run:
    """What every student of one run shares: the teacher and its counted FLOPs, the data, the epochs."""
    teacher: object
    tokenizer: object
    split: object
    transfer: object
    labelled: object
    corpus_text: list
    epochs: int
    teacher_flops: dict = field(default_factory=dict)   # batch size -> FLOPs per test sentence


def train_student(kind: str, mode: str, run: Run):
    """A fresh student of ``kind``, distilled on the cached transfer set or trained on the labels alone."""
    if mode == "distilled":
        return distilled_student(kind, run.teacher, run.tokenizer, run.transfer, run.epochs)
    student = students.make_student(run.teacher, run.tokenizer, kind)
    train.fit(student, run.labelled, tokenizer=run.tokenizer, epochs=run.epochs + 2, batch_size=16,
              lr=students.learning_rate(kind), progress=False)
    return student


def student_row(kind: str, run: Run) -> tuple:
    """One table row: sizes, FLOP ratios and speed-ups per batch size, accuracy, and accuracy on labels only."""
    test, tokenizer = run.split["test"], run.tokenizer
    student = train_student(kind, "distilled", run)
    acc = accuracy(student, test, tokenizer)
    fewer = {size: run.teacher_flops[size] / flops.inference_flops(student, test, tokenizer, batch_size=size)
             for size in SPEED_BATCHES}
    speed = speedups(student, run.teacher, test, tokenizer)   # before pruning, which swaps the embeddings
    size = (models.count_parameters(student), models.parameter_bytes(student) / 1e6)
    size += pruned_size(student, tokenizer, run.corpus_text, test)
    del student
    gc.collect()
    alone = train_student(kind, "labels only", run)
    alone_acc = accuracy(alone, test, tokenizer)
    del alone
    gc.collect()
    return (kind, *size, fewer, speed, acc, alone_acc)


def speed_cell(speed: float, fewer: float) -> str:
    """A speed-up and the share of the FLOP ratio it turns into speed."""
    return f"{speed:.1f}x ({speed / fewer:.0%})"


def table(args, rows: list[tuple], teacher_acc: float, teacher_speed: dict) -> list[str]:
    """The Markdown report."""
    lines = [f"# Students on {args.domain} ({os.cpu_count()} cores; teacher MiniLM-L6 fine-tuned on {args.labels} labels, "
             f"accuracy {teacher_acc:.3f}, {teacher_speed[1]['ms_per_sentence']:.1f} ms per sentence at batch 1, "
             f"{teacher_speed[64]['examples_per_second']:.0f} sentences/s at batch 64)", "",
             f"Distilled on {args.transfer} unlabeled {args.domain} sentences (T=2, alpha=1, {args.epochs} epochs, cached "
             f"teacher logits); 'labels only' = the same student on the {args.labels} labels. 'fewer FLOPs': the "
             "teacher's FLOPs per test sentence over the student's, counted at batch 1 / batch 64 (padding included); "
             "speed-ups are measured against the teacher, the two timed in turn, with the share of the FLOP ratio "
             "at that batch size they turn into speed in brackets.", "",
             "| student | parameters | MB | pruned vocab: parameters | MB | fewer FLOPs | speed-up, batch 1 "
             "| speed-up, batch 64 | accuracy | retained | gain over labels only |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {p:,} | {mb:.1f} | {pp:,} | {pmb:.1f} | {f[1]:.1f}x / {f[64]:.1f}x | {speed_cell(s[1], f[1])} | "
              f"{speed_cell(s[64], f[64])} | {a:.3f} | {a / teacher_acc:.1%} | {a - alone:+.3f} |"
              for k, p, mb, pp, pmb, f, s, a, alone in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="tweets")
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--transfer", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "students.md")
    args = parser.parse_args()
    lesson.setup(seed=0)
    split, labelled, teacher, tokenizer, transfer = teacher_and_transfer_set(args.domain, args.labels, args.transfer)
    test = split["test"]
    teacher_acc = accuracy(teacher, test, tokenizer)
    teacher_speed = {size: evaluate.latency(teacher, test, tokenizer, batch_size=size, repeats=SPEED_REPEATS)
                     for size in SPEED_BATCHES}
    run = Run(teacher, tokenizer, split, transfer, labelled, list(data.load_corpus([args.domain])[args.domain]["text"]),
              args.epochs, {size: flops.inference_flops(teacher, test, tokenizer, batch_size=size) for size in SPEED_BATCHES})
    rows = []
    for kind in KINDS:
        rows.append(student_row(kind, run))
        print(rows[-1], flush=True)
    lines = table(args, rows, teacher_acc, teacher_speed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
