"""The large teacher at work: MPNet-base fine-tuned on the tweets target, then distilled into four students.

    python benchmarks/large_teacher_students.py [--labels 768] [--epochs 2] [--lrs 2e-5 5e-5] [--transfer 1500]
        [--layers 4] [--seeds 0 1 2] [--out benchmarks/results/large_teacher_students.md]

1. The teacher: MPNet-base (``models.load_pretrained("mpnet")``) fine-tuned with ``distill.fine_tuned_teacher`` on
   ``--labels`` tweets labels (the target of the project's movies -> tweets pair), once per candidate learning
   rate, each in a child process of its own so that its ``ru_maxrss`` is that fine-tuning's peak memory alone
   (model load, training under AdamW, save). The rate is chosen on the tweets VALIDATION split; the test split is
   read once, by the chosen teacher. Teachers go to a fresh cache folder, so the time is always a real fine-tuning.
2. The students, distilled on the teacher's logits over ``--transfer`` unlabeled tweets (computed once, cached;
   T=2, alpha=1): MiniLM-L6 (its own tokenizer: it reads the text the teacher's logits belong to, not the
   teacher's token ids), ``--layers`` of the teacher's own 12 layers, and the BiLSTM and CNN students over the
   teacher's vocabulary. Each also trains on the same labels alone, from the same start; both over ``--seeds``.
   Per student: parameters, examples/s at batch 32 against the teacher (the two timed in turn, each with its own
   tokenizer, fastest of ``--repeats``), the FLOP ratio (``flops.inference_flops``, batch 32, same sentences),
   accuracy, accuracy kept (student / teacher) and the gain over labels alone, mean ± sd, with ``stats.verdict``.
DistilBERT's and TinyBERT's published figures are printed beside them as reference points, not measured here.
A benchmark only measures: nothing here asserts a number.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training import machine, write_results
from xdlearn import data, distill, evaluate, flops, lesson, models, runtime, stats, students, train

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "tweets"                 # the target of movies -> tweets, the project's main pair
SPEED_BATCH = 32
TEMPERATURE = 2.0
MINILM_LR = students.COPIED_LAYERS_LR   # MiniLM starts pretrained: the library's fine-tuning rate
ANCHORS = tuple((f"{name}, published", kept, speed) for name, (kept, speed) in distill.PUBLISHED_STUDENTS.items())


def splits(args: argparse.Namespace) -> tuple:
    """The tweets split, the labelled sample, and the unlabeled transfer pool: the same in parent and children."""
    split = data.domain_splits([DOMAIN], seed=0, test_size=args.test, validation_size=args.validation)[DOMAIN]
    labelled = data.sample_labels(split["train"], args.labels, seed=0)
    pool = data.unlabeled(data.sample_labels(split["train"], args.transfer, seed=1, balanced=False))
    return split, labelled, pool


def fine_tune_child(args: argparse.Namespace) -> None:
    """In a process of its own: fine-tune MPNet at ``--child-lr``; print seconds, peak MB and validation accuracy."""
    lesson.setup(seed=0)
    split, labelled, _ = splits(args)
    started = time.perf_counter()
    teacher, tokenizer, path = distill.fine_tuned_teacher(
        "mpnet", labelled, data.BINARY, seed=0, cache_dir=args.teacher_cache, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.child_lr, progress=False)
    seconds = time.perf_counter() - started
    print(json.dumps({"lr": args.child_lr, "seconds": round(seconds, 1), "peak_mb": round(runtime.peak_memory_mb()),
                      "parameter_mb": round(models.parameter_bytes(teacher) / 1e6),
                      "validation_accuracy": evaluate.evaluate(teacher, split["validation"], tokenizer)["accuracy"],
                      "path": str(path)}))


def fine_tune_teachers(args: argparse.Namespace) -> list[dict]:
    """One child process per candidate learning rate; each returns its measurements."""
    runs = []
    for lr in args.lrs:
        command = [sys.executable, __file__, "--child-lr", str(lr), "--teacher-cache", str(args.teacher_cache),
                   *child_arguments(args)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"fine-tuning MPNet at lr={lr} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"teacher at lr={lr}: {runs[-1]}", flush=True)
    return runs


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The settings a child needs to rebuild the same data and training."""
    return ["--labels", str(args.labels), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--transfer", str(args.transfer), "--test", str(args.test), "--validation", str(args.validation)]


def new_student(kind: str, teacher, tokenizer, seed: int) -> tuple:
    """A fresh student of ``kind`` drawn from ``seed``, its tokenizer, and its learning rate."""
    if kind == "minilm":
        model, own_tokenizer = models.load_pretrained(labels=data.BINARY, seed=seed)
        return model, own_tokenizer, MINILM_LR
    return students.make_student(teacher, tokenizer, kind, seed=seed), tokenizer, students.learning_rate(kind)


def trained_student(kind: str, mode: str, seed: int, run: dict, args: argparse.Namespace) -> tuple:
    """A student distilled on the cached logits (``mode="distilled"``) or trained on the labels alone."""
    model, tokenizer, lr = new_student(kind, run["teacher"], run["tokenizer"], seed)
    started = time.perf_counter()
    if mode == "distilled":
        train.fit(model, run["transfer"], distill.Distillation(None, TEMPERATURE, alpha=1.0), tokenizer=tokenizer,
                  epochs=args.distill_epochs, batch_size=32, lr=lr, seed=seed, progress=False)
    else:
        train.fit(model, run["labelled"], tokenizer=tokenizer, epochs=args.alone_epochs, batch_size=16, lr=lr,
                  seed=seed, progress=False)
    return model, tokenizer, time.perf_counter() - started


def alternated_speed(student, tokenizer, run: dict, repeats: int) -> tuple[float, float]:
    """Examples/s at batch 32 of the student and the teacher, timed in turn (each its own tokenizer), fastest kept."""
    timed = evaluate.speedup(student, run["teacher"], run["speed_sentences"], tokenizer, batch_size=SPEED_BATCH,
                             repeats=repeats, baseline_tokenizer=run["tokenizer"])
    return timed["model"]["examples_per_second"], timed["baseline"]["examples_per_second"]


def student_results(kind: str, run: dict, args: argparse.Namespace) -> dict:
    """Every seed of one student kind, distilled and on labels alone, with size and speed from the first seed."""
    test, teacher_accuracy = run["split"]["test"], run["teacher_accuracy"]
    row = {"kind": kind, "distilled": [], "labels_alone": [], "train_seconds": {"distilled": [], "labels_alone": []}}
    for seed in args.seeds:
        for mode, key in (("distilled", "distilled"), ("labels alone", "labels_alone")):
            model, tokenizer, seconds = trained_student(kind, mode, seed, run, args)
            row[key].append(evaluate.evaluate(model, test, tokenizer)["accuracy"])
            row["train_seconds"][key].append(round(seconds, 1))
            if mode == "distilled" and seed == args.seeds[0]:
                row["parameters"] = models.count_parameters(model)
                row["examples_per_second"], row["teacher_examples_per_second"] = alternated_speed(
                    model, tokenizer, run, args.repeats)
                row["fewer_flops"] = run["teacher_flops"] / flops.inference_flops(
                    model, run["speed_sentences"], tokenizer, batch_size=SPEED_BATCH)
            del model
            runtime.release_memory()
        print(f"{kind} seed {seed}: distilled {row['distilled'][-1]:.4f}, alone {row['labels_alone'][-1]:.4f}",
              flush=True)
    row["speedup"] = row["examples_per_second"] / row["teacher_examples_per_second"]
    row["kept"] = [a / teacher_accuracy for a in row["distilled"]]
    row["gain"] = [a - b for a, b in zip(row["distilled"], row["labels_alone"])]
    row["verdict"] = stats.verdict(row["distilled"], row["labels_alone"], f"distilled {kind}",
                                   f"{kind} on labels alone") if len(args.seeds) >= stats.MIN_SEEDS else \
        f"fewer than {stats.MIN_SEEDS} seeds: no verdict"
    print(json.dumps(row), flush=True)   # in the log as soon as it is known
    return row


def prepare(args: argparse.Namespace, chosen: dict) -> dict:
    """The chosen teacher from its cache folder, its test accuracy, speed sentences, FLOPs and cached logits."""
    split, labelled, pool = splits(args)
    teacher, tokenizer = models.load_pretrained(chosen["path"])
    speed_sentences = split["test"].select(range(min(args.speed_sentences, len(split["test"]))))
    started = time.perf_counter()
    transfer = distill.cache_teacher_logits(teacher, pool, tokenizer, cache_dir=args.teacher_cache / "logits")
    logit_seconds = time.perf_counter() - started
    return {"split": split, "labelled": labelled, "teacher": teacher, "tokenizer": tokenizer, "transfer": transfer,
            "teacher_accuracy": evaluate.evaluate(teacher, split["test"], tokenizer)["accuracy"],
            "speed_sentences": speed_sentences, "logit_seconds": logit_seconds,
            "teacher_parameters": models.count_parameters(teacher),
            "teacher_flops": flops.inference_flops(teacher, speed_sentences, tokenizer, batch_size=SPEED_BATCH)}


def ms(values) -> str:
    """Mean ± sd of fractions as percentages."""
    mean, sd = stats.mean_sd(values)
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def teacher_lines(result: dict) -> list[str]:
    """The teacher's fine-tuning runs (one per learning rate) and the chosen one's test accuracy."""
    t, a = result["teacher"], result["args"]
    lines = [f"## The teacher: MPNet-base fine-tuned on {a['labels']} tweets labels", "",
             f"{a['epochs']} epoch(s), batch {a['batch_size']}, AdamW over all {t['parameters']:,} parameters (no layer "
             "frozen), one child process per learning rate: its peak resident memory is that fine-tuning's alone "
             "(load, training, save). The rate is chosen on the tweets validation split "
             f"({a['validation']} sentences); the test split ({a['test']} sentences) is read by the chosen teacher only.",
             "", "| lr | fine-tuning s | peak MB | validation accuracy |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['lr']:g}{' (chosen)' if r['lr'] == t['lr'] else ''} | {r['seconds']} | {r['peak_mb']} | "
              f"{r['validation_accuracy']:.3f} |" for r in t["runs"]]
    return lines + ["", f"Chosen teacher: test accuracy {t['test_accuracy']:.3f}, {t['examples_per_second']:.1f} "
                        f"examples/s at batch {SPEED_BATCH}; its logits over {a['transfer']} unlabeled tweets took "
                        f"{t['logit_seconds']:.1f} s (computed once, cached)."]


def student_lines(result: dict) -> list[str]:
    """The students' table with the published anchors beside it, and each comparison's verdict."""
    a, rows = result["args"], result["students"]
    lines = ["## Students of the MPNet teacher", "",
             f"Distilled on the teacher's cached logits over {a['transfer']} unlabeled tweets ({a['distill_epochs']} "
             f"epochs, T={TEMPERATURE:g}, alpha=1); 'labels alone' = the same student, from the same start (MiniLM: "
             "its pretrained weights; the others: the fine-tuned teacher's layers or word embeddings, as the main job "
             "builds them), trained "
             f"on the {a['labels']} labels for {a['alone_epochs']} epochs. Seeds {a['seeds']}: mean ± sd. Speed-up: "
             f"examples/s at batch {SPEED_BATCH} over {a['speed_sentences']} test sentences, student and teacher timed "
             "in turn; 'fewer FLOPs': the teacher's FLOPs per sentence over the student's on the same sentences.", "",
             "| student | parameters | examples/s | speed-up | fewer FLOPs | accuracy % | kept % | gain over labels "
             "alone, points | labels alone % |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| MPNet-base teacher | {result['teacher']['parameters']:,} | {result['teacher']['examples_per_second']:.1f}"
             f" | 1.0x | 1.0x | {100 * result['teacher']['test_accuracy']:.1f} | 100 | | |"]
    lines += [f"| {r['kind']} | {r['parameters']:,} | {r['examples_per_second']:.1f} | {r['speedup']:.1f}x | "
              f"{r['fewer_flops']:.1f}x | {ms(r['distilled'])} | {ms(r['kept'])} | {ms(r['gain'])} | "
              f"{ms(r['labels_alone'])} |" for r in rows]
    lines += [f"| *{name}* | | | *{speed}x* | | | *{100 * kept:.1f}* | | |" for name, kept, speed in ANCHORS]
    return lines + ["", "The italic rows are published reference points (BERT-base teachers on GLUE), quoted for "
                        "scale; they were not measured here.", "", *[f"- {r['verdict']}" for r in rows]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the teacher's fine-tuning")
    parser.add_argument("--batch-size", type=int, default=16, help="the teacher's fine-tuning batch")
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-5, 5e-5])
    parser.add_argument("--transfer", type=int, default=1500, help="unlabeled tweets the students distil on")
    parser.add_argument("--distill-epochs", type=int, default=2)
    parser.add_argument("--alone-epochs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4, help="the teacher's own layers kept in that student")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--validation", type=int, default=300)
    parser.add_argument("--speed-sentences", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "large_teacher_students.md")
    parser.add_argument("--child-lr", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--teacher-cache", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child_lr is not None:
        return fine_tune_child(args)
    result = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k not in ("child_lr",
                                                                                             "teacher_cache")}}
    lesson.setup(seed=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        args.teacher_cache = Path(cache)
        runs = fine_tune_teachers(args)
        chosen = max(runs, key=lambda r: (r["validation_accuracy"], -r["lr"]))
        run = prepare(args, chosen)
        teacher_speed = evaluate.latency(run["teacher"], run["speed_sentences"], run["tokenizer"],
                                         batch_size=SPEED_BATCH, repeats=args.repeats)["examples_per_second"]
        result["teacher"] = {"runs": runs, "lr": chosen["lr"], "test_accuracy": run["teacher_accuracy"],
                             "parameters": run["teacher_parameters"], "examples_per_second": teacher_speed,
                             "flops_per_sentence": run["teacher_flops"], "logit_seconds": run["logit_seconds"]}
        print(f"teacher: {result['teacher']}", flush=True)
        kinds = ["minilm", f"{args.layers}-layer", "bilstm", "cnn"]
        result["students"] = [student_results(kind, run, args) for kind in kinds]
    result["args"]["out"] = str(args.out)
    result["seconds"], result["parent_peak_mb"] = round(time.perf_counter() - started), round(runtime.peak_memory_mb())
    result["anchors"] = [{"name": n, "kept": k, "speedup": s} for n, k, s in ANCHORS]
    lines = ["# The large teacher at work: MPNet-base on tweets, and its students", "", *teacher_lines(result), "",
             *student_lines(result), "", f"Whole run: {result['seconds']} s on {result['machine']['cpus']} cores "
             f"(load before start {result['machine']['load_before_start'][0]:.2f}); the parent process peaked at "
             f"{result['parent_peak_mb']} MB."]
    write_results(args.out, lines, result)


if __name__ == "__main__":
    main()
