"""What int8 buys the teacher and every student kind, in one run: MB on disk, accuracy kept, agreement, speed.

    python benchmarks/quantize.py [--domain tweets] [--labels 400] [--transfer 1500] [--epochs 3] [--test 500]
                                  [--repeats 3] [--kinds 3-layer 2-layer narrow bilstm cnn]
                                  [--out benchmarks/results/quantize.md]

The teacher is MiniLM-L6 fine-tuned on ``--labels`` labelled sentences, and every student kind is distilled from
its cached logits exactly as ``benchmarks/students.py`` does it (its functions, imported). Each model is then
quantized with ``deploy.quantize`` (int8 linear and LSTM weights, 8-bit embedding rows). Per model, float and int8:
MB of the weights file on disk (float as ``students.save`` writes it, int8 as ``deploy.save``), also after
vocabulary pruning to the domain's text; test accuracy, and the share of the float teacher's accuracy it keeps;
agreement of the int8 copy with its own float model; speed-up over the float teacher at batch 1 (one request at
a time) and at batch 64 (offline scoring), both through ``evaluate.latency`` (the test set tokenised once, the
fastest of ``--repeats`` passes). Results go to the ``--out`` markdown file and a ``.json`` beside it.

Target: a student <= 10 MB on disk (int8, pruned vocabulary) keeping >= 95% of the teacher's accuracy at >= 20x
its speed. A benchmark only measures: nothing here asserts a number. A smoke run that proves the whole path in about
a minute: ``--labels 64 --transfer 128 --epochs 1 --test 64 --repeats 1 --out /tmp/quantize.md``.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

# benchmarks/students.py and benchmarks/training.py, beside this file (the script's folder is on sys.path)
from students import KINDS, TEST_SIZE, distilled_student, teacher_and_transfer_set
from training import machine, write_results
from xdlearn import data, deploy, evaluate, lesson, students

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 64)   # one request at a time; offline scoring
TARGET = {"megabytes": 10.0, "kept": 0.95, "speed_up": 20.0}   # at most, at least, at least
FORMS = ("float", "int8")


def pruned_mb(model, tokenizer, texts, test) -> dict[str, float]:
    """MB on disk, float and int8, after pruning the vocabulary to ``texts`` (``model`` is pruned in place).

    Embedding rows are quantized one by one, so pruning keeps every int8 prediction: refuses if one changed.
    """
    before = evaluate.predict(deploy.quantize(model), test, tokenizer).argmax(-1)
    with tempfile.TemporaryDirectory() as folder:
        pruned, pruned_tokenizer = students.prune_vocabulary(model, tokenizer, texts, folder)
        quantized = deploy.quantize(pruned)
        after = evaluate.predict(quantized, test, pruned_tokenizer).argmax(-1)
        sizes = deploy.saved_mb(pruned, pruned_tokenizer, quantized)
    if (before != after).any():
        raise RuntimeError("vocabulary pruning changed an int8 prediction")
    return sizes


def relative(row: dict, teacher: dict) -> dict:
    """Accuracy kept and speed-up of one model's float and int8 forms, both against the float teacher."""
    base_accuracy, base_speed = teacher["float_accuracy"], teacher["examples_per_second"]
    return {"kept": {form: row[f"{form}_accuracy"] / base_accuracy for form in FORMS},
            "speed_up": {batch: {form: row["examples_per_second"][batch][form] / base_speed[batch]["float"]
                                 for form in FORMS} for batch in BATCH_SIZES}}


def meets_target(row: dict, batch_size: int) -> bool:
    """Whether a model's int8 form, vocabulary pruned, is small, accurate and fast enough at ``batch_size``."""
    return (row["pruned_mb"]["int8"] <= TARGET["megabytes"] and row["kept"]["int8"] >= TARGET["kept"]
            and row["speed_up"][batch_size]["int8"] >= TARGET["speed_up"])


def short_of_target(row: dict) -> str:
    """What keeps a model's int8 form (pruned vocabulary) from the target, e.g. "kept 93.5%, batch 1 4.0x"."""
    misses = []
    if row["pruned_mb"]["int8"] > TARGET["megabytes"]:
        misses.append(f"{row['pruned_mb']['int8']:.1f} MB")
    if row["kept"]["int8"] < TARGET["kept"]:
        misses.append(f"kept {row['kept']['int8']:.1%}")
    misses += [f"batch {b} {row['speed_up'][b]['int8']:.1f}x" for b in BATCH_SIZES
               if row["speed_up"][b]["int8"] < TARGET["speed_up"]]
    return ", ".join(misses) or "met"


def table(rows: dict[str, dict]) -> list[str]:
    """The markdown table: one line per model, float -> int8 in every cell that has both."""
    lines = ["| model | MB on disk | pruned vocab: MB | accuracy | kept (of float teacher) | agreement int8/float "
             "| speed-up, batch 1 | speed-up, batch 64 | short of target |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        speed = [f"{r['speed_up'][b]['float']:.1f}x -> {r['speed_up'][b]['int8']:.1f}x" for b in BATCH_SIZES]
        lines.append(f"| {name} | {r['float_mb']:.1f} -> {r['int8_mb']:.1f} | {r['pruned_mb']['float']:.1f} -> "
                     f"{r['pruned_mb']['int8']:.1f} | {r['float_accuracy']:.3f} -> {r['int8_accuracy']:.3f} | "
                     f"{r['kept']['float']:.1%} -> {r['kept']['int8']:.1%} | {r['agreement']:.3f} | "
                     f"{speed[0]} | {speed[1]} | {short_of_target(r)} |")
    return lines


def markdown(result: dict) -> list[str]:
    """The results file: machine, settings, the table and which models meet the target."""
    m, s, rows = result["machine"], result["settings"], result["rows"]
    teacher = rows["teacher"]
    base = ", ".join(f"{teacher['examples_per_second'][b]['float']:.0f} at batch {b}" for b in BATCH_SIZES)
    lines = [f"# int8 quantization on {s['domain']} ({m['node']}, {m['cpus']} cores, {m['torch_threads']} threads)",
             "",
             f"Machine: {m['platform']}, {m['processor']}; torch {m['torch']}, transformers {m['transformers']}; "
             f"load average before the run {m['load_before_start'][0]:.1f}.", "",
             f"Teacher MiniLM-L6 fine-tuned on {s['labels']} labels; students distilled on {s['transfer']} unlabeled "
             f"{s['domain']} sentences (T=2, alpha=1, {s['epochs']} epochs, cached teacher logits) as "
             "benchmarks/students.py does. int8 = `deploy.quantize`: int8 linear and LSTM weights (activations "
             "quantized on the fly), 8-bit embedding rows; convolutions and LayerNorm stay float.", "",
             f"Each cell is float -> int8. MB: the weights file on disk (`students.save`, `deploy.save`); pruned "
             f"vocab: after keeping only the word pieces of the {s['domain']} corpus (no int8 prediction changes). "
             f"Accuracy on {s['test']} test sentences; kept = accuracy / the float teacher's "
             f"({teacher['float_accuracy']:.3f}); agreement = share of predictions the int8 copy shares with its "
             f"float model. Speed-up = examples/second over the float teacher's ({base}), fastest of "
             f"{s['repeats']} passes (`evaluate.latency`).", ""]
    lines += table(rows)
    met = {b: [name for name, r in rows.items() if name != "teacher" and meets_target(r, b)] for b in BATCH_SIZES}
    lines += ["", f"Target: a student <= {TARGET['megabytes']:.0f} MB on disk (int8, pruned vocabulary) keeping >= "
              f"{TARGET['kept']:.0%} of the teacher's accuracy at >= {TARGET['speed_up']:.0f}x its speed. "
              + "; ".join(f"batch {b}: met by {', '.join(met[b]) or 'no student'}" for b in BATCH_SIZES) + "."]
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="tweets")
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--transfer", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--test", type=int, default=TEST_SIZE, help="test sentences (accuracy and speed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model and batch size (fastest counts)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quantize.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    host = machine()
    lesson.setup(seed=0)
    split, _, teacher, tokenizer, transfer = teacher_and_transfer_set(args.domain, args.labels, args.transfer,
                                                                      test_size=args.test)
    test, texts = split["test"], list(data.load_corpus([args.domain])[args.domain]["text"])
    rows = {"teacher": deploy.measure(teacher, tokenizer, test, BATCH_SIZES, args.repeats)}
    print("teacher", rows["teacher"], flush=True)
    for kind in args.kinds:
        student = distilled_student(kind, teacher, tokenizer, transfer, args.epochs)
        rows[kind] = deploy.measure(student, tokenizer, test, BATCH_SIZES, args.repeats)
        rows[kind]["pruned_mb"] = pruned_mb(student, tokenizer, texts, test)
        print(kind, rows[kind], flush=True)
        del student
        gc.collect()
    rows["teacher"]["pruned_mb"] = pruned_mb(teacher, tokenizer, texts, test)   # last: the students need it whole
    for row in rows.values():
        row.update(relative(row, rows["teacher"]))
    settings = {key: getattr(args, key) for key in ("domain", "labels", "transfer", "epochs", "test", "repeats")}
    result = {"machine": host, "settings": {**settings, "batch_sizes": BATCH_SIZES, "target": TARGET},
              "rows": rows, "meets_target": {b: [n for n, r in rows.items() if n != "teacher" and meets_target(r, b)]
                                             for b in BATCH_SIZES}}
    write_results(args.out, markdown(result), result)


if __name__ == "__main__":
    main()
