"""Peak memory of fine-tuning on long texts, with and without ``fit(max_tokens=...)``, each in a fresh process.

    python benchmarks/memory.py [--examples 256] [--batch-size 32] [--limits none 2048 1024] [--out benchmarks/results/memory.md]

Long texts are made from the default corpus: movie-review sentences joined until they fill ``--max-length`` (128)
word pieces, as product reviews or news paragraphs would. Each setting trains a fresh MiniLM for one epoch in its
own process (so one setting's heap cannot flatter or burden the next) and reports the process's peak resident set
(``runtime.peak_memory_mb``), the seconds the epoch took and the final training loss. ``max_tokens`` slices a batch
into parts of at most that many padded positions and adds up their gradients: the same update, in less memory.
Binder and the project's lessons budget 2 GB and 1.8 GB. A benchmark only measures: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAIN, SEED = "movies", 0
EXAMPLES, BATCH_SIZE, MAX_LENGTH = 256, 32, 128
LIMITS = ("none", "2048", "1024")          # max_tokens per slice; 32 x 64 and 32 x 32 padded positions


def long_texts(n: int, max_length: int):
    """``n`` labelled texts of about ``max_length`` word pieces: consecutive same-label sentences joined."""
    from datasets import Dataset
    from xdlearn import data, models
    tokenizer = models.load_tokenizer()
    corpus = data.load_corpus([DOMAIN])[DOMAIN].shuffle(seed=SEED)
    texts, labels = [], []
    for label in (0, 1):
        pieces, size = [], 0
        for text in corpus.filter(lambda row: row["label"] == label)["text"]:
            pieces.append(text)
            size += len(tokenizer.tokenize(text))
            if size >= max_length:
                texts.append(" ".join(pieces))
                labels.append(label)
                pieces, size = [], 0
            if labels.count(label) >= n // 2:
                break
    return Dataset.from_dict({"text": texts, "label": labels}).shuffle(seed=SEED), tokenizer


def child(examples: int, batch_size: int, max_length: int, limit: str) -> None:
    """One setting, in this (fresh) process; prints one JSON line."""
    from xdlearn import data, lesson, models, runtime, train
    lesson.setup(seed=SEED)
    texts, tokenizer = long_texts(examples, max_length)
    model, tokenizer = models.load_pretrained(labels=data.BINARY, seed=SEED)
    before = runtime.peak_memory_mb()
    started = time.perf_counter()
    history = train.fit(model, texts, tokenizer=tokenizer, epochs=1, batch_size=batch_size, max_length=max_length,
                        max_tokens=None if limit == "none" else int(limit), progress=False)
    tokens = sum(len(ids) for ids in data.tokenize(texts, tokenizer, max_length)["input_ids"])
    print(json.dumps({"limit": limit, "peak_mb": runtime.peak_memory_mb(), "peak_before_training_mb": before,
                      "seconds": time.perf_counter() - started, "examples": len(texts),
                      "mean_tokens": tokens / len(texts), "final_loss": history.epochs[-1]["train_loss"]}))


def run_setting(args: argparse.Namespace, limit: str) -> dict:
    """Run one setting in a fresh interpreter and return its measurements."""
    command = [sys.executable, __file__, "--child", limit, "--examples", str(args.examples),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"setting max_tokens={limit} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """The results table, with the machine it ran on."""
    base = rows[0]
    lines = [f"# Peak memory of fine-tuning on long texts ({platform.platform()}, {os.cpu_count()} cores, "
             f"load before start {os.getloadavg()[0]:.1f})", "",
             f"{base['examples']} {DOMAIN} texts of {base['mean_tokens']:.0f} word pieces on average (max "
             f"{args.max_length}), batch {args.batch_size}, one epoch of MiniLM fine-tuning, each setting in a fresh "
             "process. Peak = the process's peak resident set; 'before training' = after loading data and model.", "",
             "| max_tokens | peak MB | before training MB | training adds MB | seconds | time vs none | final loss |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['limit']} | {row['peak_mb']:.0f} | {row['peak_before_training_mb']:.0f} | "
                     f"{row['peak_mb'] - row['peak_before_training_mb']:.0f} | {row['seconds']:.0f} | "
                     f"{row['seconds'] / base['seconds']:.2f}x | {row['final_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--limits", nargs="+", default=list(LIMITS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.md")
    args = parser.parse_args()
    if args.child is not None:
        return child(args.examples, args.batch_size, args.max_length, args.child)
    rows = [run_setting(args, limit) for limit in args.limits]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
