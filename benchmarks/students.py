"""Every student kind, distilled versus trained on labels alone, against its teacher, in one run.

    python benchmarks/students.py [--domain tweets] [--labels 400] [--transfer 1500] [--out benchmarks/results/students.md]

Reports, per student: parameters, MB, inference speed-up over the teacher, target accuracy as a fraction of
the teacher's, and the gain of distillation over the same student trained on the labels alone.
Figures to reach: a 2-layer student keeps >= 97% at >= 2.8x; BiLSTM/CNN keep >= 90% at >= 15x.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
from pathlib import Path

from xdlearn import data, distill, evaluate, lesson, models, students, train

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("3-layer", "2-layer", "narrow", "bilstm", "cnn")   # each trains at students.learning_rate(kind)
TEST_SIZE, VALIDATION_SIZE = 500, 100


def accuracy_and_speed(model, test, tokenizer) -> tuple[float, float]:
    """Test accuracy and measured inference examples/second (batch 32, 2 threads)."""
    acc = evaluate.evaluate(model, test, tokenizer)["accuracy"]
    return acc, evaluate.latency(model, test, tokenizer, batch_size=32, repeats=5)["examples_per_second"]


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
    t_acc, t_speed = accuracy_and_speed(teacher, split["test"], tokenizer)
    corpus_text = list(data.load_corpus([args.domain])[args.domain]["text"])
    rows = []
    for kind in KINDS:
        lr = students.learning_rate(kind)
        scores = {}
        for mode in ("distilled", "labels only"):
            if mode == "distilled":
                student = distilled_student(kind, teacher, tokenizer, transfer, args.epochs)
            else:
                student = students.make_student(teacher, tokenizer, kind)
                train.fit(student, labelled, tokenizer=tokenizer, epochs=args.epochs + 2, batch_size=16, lr=lr,
                          progress=False)
            scores[mode] = accuracy_and_speed(student, split["test"], tokenizer)
            if mode == "distilled":
                size = (models.count_parameters(student), models.parameter_bytes(student) / 1e6)
                size += pruned_size(student, tokenizer, corpus_text, split["test"])
            del student
            gc.collect()
        (acc, speed), (alone, _) = scores["distilled"], scores["labels only"]
        rows.append((kind, *size, speed / t_speed, acc, acc / t_acc, acc - alone))
        print(rows[-1], flush=True)
    lines = [f"# Students on {args.domain} ({os.cpu_count()} cores; teacher MiniLM-L6 fine-tuned on {args.labels} labels, "
             f"accuracy {t_acc:.3f}, {t_speed:.0f} ex/s)", "",
             f"Distilled on {args.transfer} unlabeled {args.domain} sentences (T=2, alpha=1, {args.epochs} epochs, cached "
             f"teacher logits); 'labels only' = the same student on the {args.labels} labels.", "",
             "| student | parameters | MB | pruned vocab: parameters | MB | speed-up | accuracy | retained "
             "| gain over labels only |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {p:,} | {mb:.1f} | {pp:,} | {pmb:.1f} | {s:.1f}x | {a:.3f} | {r:.1%} | {g:+.3f} |"
              for k, p, mb, pp, pmb, s, a, r, g in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
