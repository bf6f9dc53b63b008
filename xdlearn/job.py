"""The main job: measure the domain gap, fine-tune for the target, save the model, write a report.

``xdlearn run`` calls :func:`run_main_job`; a notebook can call it too. Every number in the report
comes from this run and is also written to ``results.json``.
"""
from __future__ import annotations

import contextvars
import copy
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path


from . import adapt, data, distill, evaluate, infer, metrics, models, sources, students
from .corpus import DOMAINS
from .report import write_distill_report, write_report
from .runtime import peak_memory_mb, release_memory, set_seed, set_threads
from .train import History, fine_tune, fit


ADAPT_METHODS = ("none", "mlm", "dann")
STATE = ".resume"   # inside an output folder: training checkpoints and finished pieces, removed when the run ends
_STATE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("state_dir", default=None)


@dataclass
class JobConfig:
    """Settings of the main job; the defaults finish in a few minutes on 2 CPU cores."""

    source: str = "movies"
    target: str = "tweets"
    budget: int = 256            # target labels for fine-tuning
    train_size: int = 1500       # labelled sentences per domain for the source / transfer-matrix models
    epochs: int = 2              # epochs on source data
    target_epochs: int = 5       # epochs on the (small) target budget
    test_size: int = 500         # test sentences per domain
    validation_size: int = 200
    matrix: bool = True          # train on every domain (the full transfer matrix), not the source only
    model: str = models.DEFAULT_MODEL
    batch_size: int = 32
    max_tokens: int = 2048       # padded positions per forward pass; a longer batch trains in slices (less memory)
    lr: float = 1e-4
    seed: int = 0
    student: str = "2-layer"     # distilled student: "N-layer", "narrow", "bilstm" or "cnn"; "" skips
    teacher_model: str = ""      # a larger teacher ("mpnet") fine-tuned on the budget for the student; "": the model
    transfer_size: int = 2000    # unlabeled target sentences the teacher labels for the student
    distill_epochs: int = 3
    temperature: float = 2.0
    adapt: str = "none"          # also train a source model that uses unlabeled target text: none, mlm or dann
    adapt_epochs: int = 1        # epochs of continued masked-LM pretraining (--adapt mlm)
    data: list = field(default_factory=list)   # your table files (CSV, TSV, JSON, JSONL, Parquet) instead of the corpus
    reviews: str = ""            # or a folder of <domain>/{positive,negative}.review files
    text_column: str = "text"    # columns of --data files
    label_column: str = "label"
    domain_column: str = ""      # without it, each --data file is one domain named after the file
    labels: str = ""             # class names, comma-separated (default: the values found in the label column)
    encoding: str = ""           # encoding of --data / --reviews files that are not UTF-8
    progress: bool = True

    def own_data(self) -> bool:
        """Whether the domains come from the user's files rather than the built-in corpus."""
        return bool(self.data or self.reviews)

    def check(self, teacher: str | None = None) -> None:
        """Reject settings that cannot work, naming the one at fault, before any data is read or model trained."""
        if not self.own_data():
            for name in ("source", "target"):
                if getattr(self, name) not in DOMAINS:
                    raise ValueError(f"{name}={getattr(self, name)!r} is not a domain; choose from {list(DOMAINS)}")
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}: pick two different domains")
        if self.adapt not in ADAPT_METHODS:
            raise ValueError(f"adapt={self.adapt!r}: choose from {list(ADAPT_METHODS)}")
        for name in ("budget", "train_size", "epochs", "target_epochs", "test_size", "validation_size", "batch_size",
                     "max_tokens", "transfer_size", "distill_epochs", "adapt_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above 0, got {value}")
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0, got {self.seed}")
        models.check_model(teacher or self.model)  # a damaged model directory fails here, not after training
        if self.teacher_model:
            check_teacher_model(self.teacher_model, self.student, teacher)
        if self.student:
            check_student(self.student, teacher or self.teacher_model or self.model)


def check_teacher_model(name: str, student: str, teacher: str | None) -> None:
    """A teacher model to fine-tune here needs a student and no saved --teacher; it is resolved (fetched) now."""
    if not student:
        raise ValueError(f"teacher_model={name!r} is distilled into --student; give one (e.g. --student 2-layer)")
    if teacher is not None:
        raise ValueError(f"give --teacher (a fine-tuned model) or --teacher-model ({name!r}, trained here), not both")
    models.resolve_model(name)  # mpnet is fetched and verified here, before any data is read or folder made


def check_student(kind: str, teacher: str) -> None:
    """A student kind that can be built from ``teacher``: an "N-layer" student keeps at most the teacher's layers."""
    match = students.LAYERS_KIND.fullmatch(kind)
    if not (kind in students.FRESH_KINDS or match):
        raise ValueError(f"student={kind!r}: use 'N-layer', 'narrow', 'bilstm' or 'cnn'")
    if match:
        from transformers import AutoConfig
        layers = AutoConfig.from_pretrained(models.resolve_model(teacher)).num_hidden_layers
        if not 1 <= int(match.group(1)) <= layers:
            raise ValueError(f"student={kind!r}: the teacher ({teacher}) has {layers} layers; keep 1 to {layers}")


def _log(message: str, started: float) -> None:
    """One progress line: seconds since the start, peak memory so far, what comes next."""
    print(f"[{time.perf_counter() - started:6.0f}s {peak_memory_mb() / 1000:4.1f} GB] {message}", flush=True)


def resumable(name: str) -> dict:
    """``fit`` arguments that checkpoint training run ``name`` in the job's state folder and continue it if there."""
    state = _STATE_DIR.get()
    return {"checkpoint_dir": state / f"fit-{name}", "resume": True} if state is not None else {}


def _train_fresh(cfg: JobConfig, train_set, epochs: int, eval_data=None, name: str | None = None):
    """A new pretrained model fine-tuned on ``train_set``; returns (model, tokenizer, history)."""
    return fine_tune(train_set, cfg.model, labels=class_names(train_set), seed=cfg.seed, epochs=epochs,
                     batch_size=cfg.batch_size, lr=cfg.lr, eval_data=eval_data, progress=cfg.progress,
                     max_tokens=cfg.max_tokens, **(resumable(name) if name else {}))


def train_teacher(cfg: JobConfig, splits: dict, started: float) -> tuple:
    """A teacher fine-tuned here on the target budget: ``--teacher-model`` (cached, trained once per machine) or
    ``--model``; returns (model, tokenizer)."""
    labels = data.sample_labels(splits[cfg.target]["train"], cfg.budget, seed=cfg.seed)
    name = cfg.teacher_model or cfg.model
    _log(f"fine-tuning the teacher ({name}) on {len(labels)} {cfg.target} labels", started)
    if not cfg.teacher_model:
        model, tokenizer, _ = _train_fresh(cfg, labels, cfg.target_epochs)
        return model, tokenizer
    model, tokenizer, path = distill.fine_tuned_teacher(  # checkpointed in a run's state folder: a kill resumes it
        name, labels, class_names(labels), seed=cfg.seed, epochs=cfg.target_epochs, batch_size=cfg.batch_size,
        lr=cfg.lr, progress=cfg.progress, max_tokens=cfg.max_tokens, **resumable("large-teacher"))
    _log(f"the {name} teacher is in {path}", started)
    return model, tokenizer


def class_names(ds) -> list[str]:
    """The class names of a dataset's labels: the corpus's two, or those of your own data."""
    return list(ds.features["label"].names)


def _accuracies(scores: dict) -> dict:
    return {domain: round(m["accuracy"], 4) for domain, m in scores.items()}


def _read_json(path: Path, default):
    """A JSON file of the job's state, or ``default`` when it is not there (yet)."""
    return json.loads(path.read_text()) if path.exists() else default


def _write_json(path: Path, value) -> None:
    """Write JSON atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def measure_gap(cfg: JobConfig, splits: dict, started: float) -> tuple:
    """Train on each source domain (or the source only) and test on all: the transfer matrix.

    With a state folder each finished row (and the source model) is kept there, so a resumed run trains only
    the domains still missing.
    """
    import pandas as pd
    state = _STATE_DIR.get()
    tests = {d: s["test"] for d, s in splits.items()}
    rows = _read_json(state / "matrix.json", {}) if state else {}
    kept = {}

    def train_on(domain):
        _log(f"fine-tuning on {domain} ({len(splits[domain]['train'])} labels)", started)
        model, tokenizer, history = _train_fresh(cfg, splits[domain]["train"], cfg.epochs, name=f"matrix-{domain}")
        if domain == cfg.source:
            kept.update(model=model, tokenizer=tokenizer, history=history)
            if state:
                _keep_source(state, model, tokenizer, history)
        return model, tokenizer

    for domain in (list(splits) if cfg.matrix else [cfg.source]):
        if domain not in rows:
            rows[domain] = evaluate.transfer_matrix(train_on, {domain: splits[domain]["train"]}, tests).loc[domain].to_dict()
            if state:
                _write_json(state / "matrix.json", rows)
    matrix = pd.DataFrame(rows).T
    matrix.index.name, matrix.columns.name = "trained on", "tested on"
    if not kept:  # trained before the interruption: read back from the state folder
        model, tokenizer = models.load_pretrained(state / "source-model")
        kept.update(model=model, tokenizer=tokenizer, history=History.load(state / "source-history.json"))
    return matrix, kept["model"], kept["tokenizer"], kept["history"]


def _keep_source(state: Path, model, tokenizer, history) -> None:
    """Save the source model and its history for a resumed run (safetensors and JSON)."""
    with models.quiet_transformers():
        model.save_pretrained(state / "source-model")
        tokenizer.save_pretrained(state / "source-model")
    history.save(state / "source-history.json")


def adapt_to_target(cfg: JobConfig, splits: dict, source_model, tokenizer, started: float) -> dict:
    """Fine-tune the source model on the target budget, and a fresh model on the same labels."""
    labels = data.sample_labels(splits[cfg.target]["train"], cfg.budget, seed=cfg.seed)
    evals = {cfg.target: splits[cfg.target]["validation"]}
    _log(f"fine-tuning the {cfg.source} model on {len(labels)} {cfg.target} labels", started)
    adapted = copy.deepcopy(source_model)
    history = fit(adapted, labels, tokenizer=tokenizer, epochs=cfg.target_epochs,
                  batch_size=min(cfg.batch_size, 16), lr=cfg.lr, seed=cfg.seed, eval_data=evals,
                  progress=cfg.progress, max_tokens=cfg.max_tokens, **resumable("target"))
    _log(f"fine-tuning a fresh pretrained model on the same {len(labels)} labels", started)
    target_only, _, _ = _train_fresh(cfg, labels, cfg.target_epochs, name="target-only")
    tests = {d: splits[d]["test"] for d in (cfg.source, cfg.target)}
    return {"model": adapted, "history": history,
            "adapted": evaluate.evaluate_domains(adapted, tests, tokenizer),
            "target_only": evaluate.evaluate_domains(target_only, tests, tokenizer)}


def unlabeled_pool(cfg: JobConfig, splits: dict) -> "data.Dataset":
    """Target training sentences with their labels removed: what adaptation and distillation learn from."""
    target = splits[cfg.target]["train"]
    return data.unlabeled(data.sample_labels(target, cfg.transfer_size, seed=cfg.seed + 1, balanced=False))


def adapt_source(cfg: JobConfig, splits: dict, out: Path, started: float) -> dict:
    """A source model that has also seen unlabeled target text (``--adapt``), scored before and after the budget."""
    set_seed(cfg.seed)  # each stage from its own seed: a resumed run draws what an uninterrupted one would
    pool, source = unlabeled_pool(cfg, splits), splits[cfg.source]["train"]
    model, tokenizer, history = _train_with_target_text(cfg, pool, source, out, started)
    tests = {d: splits[d]["test"] for d in (cfg.source, cfg.target)}
    before = _accuracies(evaluate.evaluate_domains(model, tests, tokenizer))
    labels = data.sample_labels(splits[cfg.target]["train"], cfg.budget, seed=cfg.seed)
    _log(f"fine-tuning the {cfg.adapt}-adapted model on {len(labels)} {cfg.target} labels", started)
    fit(model, labels, tokenizer=tokenizer, epochs=cfg.target_epochs, batch_size=min(cfg.batch_size, 16),
        lr=cfg.lr, seed=cfg.seed, progress=cfg.progress, max_tokens=cfg.max_tokens, **resumable("adapted-target"))
    after = _accuracies(evaluate.evaluate_domains(model, tests, tokenizer))
    return {"method": cfg.adapt, "unlabeled_sentences": len(pool),
            "train_loss": round(history.last["train_loss"], 4),  # the last epoch on the target text (MLM or DANN)
            "target_zero_labels": before[cfg.target],
            "target_after_budget": after[cfg.target], "source_zero_labels": before[cfg.source],
            "source_after_budget": after[cfg.source],
            "encoder_path": str(out / "adapted-encoder") if cfg.adapt == "mlm" else None}


def _train_with_target_text(cfg: JobConfig, pool, source, out: Path, started: float) -> tuple:
    """The source model trained with the unlabeled ``pool``; returns (model, tokenizer, history of that pass).

    ``mlm``: continue masked-LM pretraining on the target text, then fine-tune on the source labels.
    ``dann``: fine-tune on the source labels with a domain-adversarial loss against the target text.
    """
    model, tokenizer = models.load_pretrained(cfg.model, labels=class_names(source), seed=cfg.seed)
    settings = dict(tokenizer=tokenizer, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress,
                    max_tokens=cfg.max_tokens)
    if cfg.adapt == "dann":
        _log(f"domain-adversarial fine-tuning on {len(source)} {cfg.source} labels "
             f"against {len(pool)} unlabeled {cfg.target} sentences", started)
        objective = adapt.DomainAdversarial(pool, tokenizer, model.config.hidden_size, cfg.batch_size, seed=cfg.seed)
        return model, tokenizer, fit(model, source, objective, epochs=cfg.epochs, **settings, **resumable("dann"))
    _log(f"continued masked-LM pretraining on {len(pool)} unlabeled {cfg.target} sentences", started)
    history = fit(model, pool, adapt.MaskedLM(model, tokenizer, seed=cfg.seed), epochs=cfg.adapt_epochs,
                  **settings, **resumable("mlm"))
    encoder = adapt.save_encoder(model, tokenizer, out / "adapted-encoder")
    del model
    _log(f"fine-tuning the adapted encoder on {len(source)} {cfg.source} labels", started)
    model, tokenizer, _ = fine_tune(source, encoder, labels=class_names(source), seed=cfg.seed, epochs=cfg.epochs,
                                    batch_size=cfg.batch_size, lr=cfg.lr, progress=cfg.progress,
                                    max_tokens=cfg.max_tokens, **resumable("mlm-source"))
    return model, tokenizer, history


def distill_to_student(cfg: JobConfig, splits: dict, teacher, tokenizer, started: float) -> dict:
    """Distil the adapted teacher into a small student on teacher-labelled target text; compare it
    with the same student trained on the target labels alone."""
    target = splits[cfg.target]
    pool = unlabeled_pool(cfg, splits)
    _log(f"teacher labels {len(pool)} unlabeled {cfg.target} sentences (logits cached)", started)
    transfer = distill.label_with_teacher(teacher, pool, tokenizer)
    lr = students.learning_rate(cfg.student)   # the same rate wherever this kind of student trains
    student = _new_student(cfg, teacher, tokenizer)
    _log(f"distilling into a {cfg.student} student ({models.count_parameters(student):,} parameters)", started)
    history = fit(student, transfer, distill.Distillation(None, cfg.temperature, alpha=1.0),
                  tokenizer=tokenizer, epochs=cfg.distill_epochs, batch_size=cfg.batch_size,
                  lr=lr, seed=cfg.seed, progress=cfg.progress, max_tokens=cfg.max_tokens, **resumable("student"))
    _log(f"training the same student on the {cfg.budget} {cfg.target} labels alone", started)
    alone = _new_student(cfg, teacher, tokenizer)
    labels = data.sample_labels(target["train"], cfg.budget, seed=cfg.seed)
    fit(alone, labels, tokenizer=tokenizer, epochs=cfg.target_epochs, batch_size=min(cfg.batch_size, 16),
        lr=lr, seed=cfg.seed, progress=cfg.progress, max_tokens=cfg.max_tokens, **resumable("student-alone"))
    test = target["test"]
    logits = {name: infer.predict(m, test, tokenizer) for name, m in
              (("teacher", teacher), ("student", student), ("labels_only", alone))}
    scores = {name: metrics.metrics_from_logits(z, list(test["label"])) for name, z in logits.items()}
    speed = {name: evaluate.latency(m, test, tokenizer)["examples_per_second"]
             for name, m in (("teacher", teacher), ("student", student))}
    return {"student": student, "history": history, "kind": cfg.student, "transfer_sentences": len(pool),
            "parameters": {"teacher": models.count_parameters(teacher), "student": models.count_parameters(student)},
            "accuracy": {k: round(v["accuracy"], 4) for k, v in scores.items()},
            "ece": {k: round(v["ece"], 4) for k, v in scores.items()},
            "agreement_with_teacher": round(evaluate.agreement(logits["student"], logits["teacher"]), 4),
            "retained": round(scores["student"]["accuracy"] / scores["teacher"]["accuracy"], 4),
            "examples_per_second": {k: round(v, 1) for k, v in speed.items()},
            "speedup": round(speed["student"] / speed["teacher"], 2)}


def _new_student(cfg: JobConfig, teacher, tokenizer):
    """A student drawn from ``cfg.seed`` alone: both students start alike, and a resumed run draws the same one."""
    return students.make_student(teacher, tokenizer, cfg.student, seed=cfg.seed)


def save_and_serve(model, tokenizer, out: Path, examples: list[str], folder: str = "model") -> dict:
    """Save with ``save_pretrained`` and prove the directory serves through ``pipeline``."""
    from transformers import pipeline
    path = out / folder
    with models.quiet_transformers():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        classify = pipeline("text-classification", model=str(path), device=-1)
    served = classify(examples) if examples else []
    return {"path": str(path), "size_mb": round(models.disk_size_mb(path), 1),
            "examples": [{"text": t, **s} for t, s in zip(examples, served)]}


def save_student(student, tokenizer, out: Path, folder: str = "student") -> dict:
    """Save a student of any kind with ``students.save`` and prove it loads back; its path and size on disk."""
    path = students.save(student, tokenizer, out / folder)
    students.load(path)  # a directory that cannot be loaded fails this run, not its first user
    return {"path": str(path), "size_mb": round(models.disk_size_mb(path), 1)}


def own_domains(cfg: JobConfig, need_source: bool = True) -> dict | None:
    """The domains of the user's files, loaded and checked before any folder is made (None: the built-in corpus)."""
    return sources.job_domains(cfg.data, cfg.reviews, cfg.text_column, cfg.label_column, cfg.domain_column,
                               cfg.labels, cfg.encoding, cfg.source if need_source else None, cfg.target)


def job_splits(cfg: JobConfig, own: dict | None, domains: list[str] | None = None, max_train: int | None = None) -> dict:
    """Train / validation / test of every domain (or of ``domains``), from the user's files or the corpus."""
    if own is None:
        return data.domain_splits(domains, seed=cfg.seed, test_size=cfg.test_size,
                                  validation_size=cfg.validation_size, max_train=max_train)
    picked = {d: own[d] for d in (domains or own)}
    return data.split_domains(picked, seed=cfg.seed, test_size=cfg.test_size, validation_size=cfg.validation_size,
                              max_train=max_train)


def save_results(results: dict, out: Path) -> None:
    """``results.json`` written atomically after every stage: a failure later in the job keeps what was measured."""
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "results.json")


def _report(results: dict, parts: dict, out: Path, started: float) -> None:
    """Rewrite ``report.md``, its figures and ``results.json`` with every stage finished so far."""
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["peak_memory_mb"] = round(peak_memory_mb(), 1)
    write_report(results, parts["matrix"], parts["source_history"], parts["target_history"], out)
    save_results(results, out)


def _core_stages(cfg: JobConfig, splits: dict, out: Path, started: float, results: dict) -> dict:
    """The domain gap, then fine-tuning for the target and serving it; results and report written as each ends."""
    matrix, source_model, tokenizer, source_history = measure_gap(cfg, splits, started)
    results.update(transfer_matrix={s: {t: round(v, 4) for t, v in row.items()} for s, row in matrix.iterrows()},
                   source_model=_accuracies({d: {"accuracy": matrix.loc[cfg.source, d]} for d in matrix.columns}),
                   training={"source_examples_per_second": round(source_history.last["examples_per_second"], 1)})
    parts = {"matrix": matrix, "source_history": source_history}
    state = _STATE_DIR.get()
    if "target" in results:  # finished before an interruption: the served model and its history are on disk
        del source_model
        parts["model"], parts["tokenizer"] = models.load_pretrained(out / "model")
        parts["target_history"] = History.load(state / "target-history.json")
        return parts
    results["stage"] = "fine-tuning for the target"
    save_results(results, out)
    target = adapt_to_target(cfg, splits, source_model, tokenizer, started)
    _log("saving the adapted model and serving it through transformers.pipeline", started)
    served = save_and_serve(target["model"], tokenizer, out, list(splits[cfg.target]["test"]["text"][:3]))
    if state:
        target["history"].save(state / "target-history.json")
    results.update(
        target={"source_only": round(matrix.loc[cfg.source, cfg.target], 4),
                "in_domain": round(matrix.loc[cfg.target, cfg.target], 4) if cfg.matrix else None,
                "target_only": _accuracies(target["target_only"])[cfg.target],
                "source_then_target": _accuracies(target["adapted"])[cfg.target]},
        forgetting={"source_accuracy_before": round(matrix.loc[cfg.source, cfg.source], 4),
                    "source_accuracy_after": _accuracies(target["adapted"])[cfg.source]},
        model={**models.describe(target["model"]), **served})
    parts.update(model=target["model"], tokenizer=tokenizer, target_history=target["history"])
    return parts


def _run_stages(cfg: JobConfig, splits: dict, out: Path, started: float, results: dict) -> None:
    """Every stage not finished yet, in turn; the report grows after each, so a late failure keeps what came before."""
    parts = _core_stages(cfg, splits, out, started, results)
    _report(results, parts, out, started)
    if cfg.adapt != "none" and "adaptation" not in results:
        results["stage"] = f"adaptation ({cfg.adapt})"
        save_results(results, out)
        results["adaptation"] = adapt_source(cfg, splits, out, started)
        release_memory()
        _report(results, parts, out, started)
    if cfg.student and "distillation" not in results:
        results["stage"] = f"distillation ({cfg.student} student)"
        save_results(results, out)
        set_seed(cfg.seed)
        teacher, tokenizer = (train_teacher(cfg, splits, started) if cfg.teacher_model
                              else (parts["model"], parts["tokenizer"]))
        student = distill_to_student(cfg, splits, teacher, tokenizer, started)
        results["distillation"] = {k: v for k, v in student.items() if k not in ("student", "history")}
        results["distillation"].update(save_student(student["student"], tokenizer, out))
    results["stage"] = "done"
    _report(results, parts, out, started)


def splits_fingerprint(splits: dict) -> str:
    """A hash of every split's texts and labels: a resumed run must see exactly the data the first one saw."""
    digest = hashlib.sha256()
    for domain in sorted(splits):
        for part in ("train", "validation", "test"):
            rows = splits[domain][part]
            digest.update(json.dumps([domain, part, list(rows["text"]), list(rows["label"])]).encode())
    return digest.hexdigest()


def _start(cfg: JobConfig | None, out_dir, resume) -> tuple[JobConfig, dict, Path | None]:
    """The settings, the results so far and the folder of a resumed run (or of a new one, made later)."""
    if resume is None:
        cfg = cfg or JobConfig()
        return cfg, {"config": asdict(cfg)}, None
    out = Path(resume)
    try:
        results = json.loads((out / "results.json").read_text())
        cfg = JobConfig(**results["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{out}: not the folder of an xdlearn run that can be resumed ({err})") from None
    if results.get("stage") == "done":
        raise ValueError(f"{out}: this run is already finished; its report is {out / 'report.md'}")
    results.pop("failed", None)
    return cfg, results, out.resolve()


def run_main_job(cfg: JobConfig | None = None, out_dir: str | Path | None = None,
                 resume: str | Path | None = None) -> dict:
    """Run the whole job and write ``report.md``, figures and ``results.json`` into a fresh folder.

    Settings and the user's data are checked before the folder is made; ``results.json`` is written after each
    stage (``stage`` names the one running) and a failing stage is recorded there before the error is raised.
    ``resume=OUT`` continues the run in folder OUT (killed or failed) with its own settings, from where it stopped.
    """
    cfg, results, out = _start(cfg, out_dir, resume)
    cfg.check()
    started = time.perf_counter()
    _log("loading your data" if cfg.own_data() else "loading the corpus (fetched and cached on first use)", started)
    splits = job_splits(cfg, own_domains(cfg), max_train=cfg.train_size)
    fingerprint = splits_fingerprint(splits)
    if results.setdefault("data_fingerprint", fingerprint) != fingerprint:
        raise ValueError(f"{out}: the data differ from those the run started with; it cannot be resumed on them")
    out = out or new_output_dir(out_dir)
    print(f"xdlearn: resuming the run in {out}" if resume else f"xdlearn: writing the report to {out}", flush=True)
    set_seed(cfg.seed)
    set_threads()
    results.update(domains={d: {k: len(v) for k, v in p.items()} for d, p in splits.items()})
    results.setdefault("stage", "transfer matrix")
    save_results(results, out)
    (out / STATE).mkdir(exist_ok=True)
    token = _STATE_DIR.set(out / STATE)
    try:
        _run_stages(cfg, splits, out, started, results)
    except BaseException as err:  # also KeyboardInterrupt: what was measured stays on disk
        results["failed"] = {"stage": results["stage"], "error": f"{type(err).__name__}: {err}"}
        save_results(results, out)
        raise
    finally:
        _STATE_DIR.reset(token)
    shutil.rmtree(out / STATE, ignore_errors=True)  # checkpoints of a finished run are not needed any more
    _log(f"done: {out / 'report.md'}", started)
    return results


RUN_MARKER = ".xdlearn-run"   # created exclusively in an output folder: the run that made it owns the folder


def _claim(folder: Path) -> bool:
    """Make an empty folder this run's (atomically, so two runs never share one); False if it is not empty."""
    if any(p.name != RUN_MARKER for p in folder.iterdir()):
        return False
    try:
        os.close(os.open(folder / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def new_output_dir(out_dir: str | Path | None) -> Path:
    """A folder for this run alone: ``out_dir`` if empty, else a new ``run-<time>`` folder inside it.

    Earlier reports are never overwritten, and two runs started at once never write into the same folder.
    """
    base = Path(out_dir) if out_dir else Path("xdlearn-output")
    base.mkdir(parents=True, exist_ok=True)
    if _claim(base):
        return base.resolve()
    stamp = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        candidate = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _claim(candidate)
        return candidate.resolve()
    raise OSError(f"{base}: no free run-* folder name left for {stamp}")


def run_distill_job(cfg: JobConfig | None = None, teacher: str | Path | None = None,
                    out_dir: str | Path | None = None) -> dict:
    """``xdlearn distill``: distil a fine-tuned teacher (a saved directory, or one trained here on the
    target budget) into ``cfg.student`` on unlabeled target text; write a report and the student."""
    cfg = cfg or JobConfig()
    cfg.check(teacher=str(teacher) if teacher is not None else None)  # a bad --teacher fails before any folder
    splits = job_splits(cfg, own_domains(cfg, need_source=False), [cfg.target])
    out = new_output_dir(out_dir)
    print(f"xdlearn: writing the distillation report to {out}", flush=True)
    started = time.perf_counter()
    set_seed(cfg.seed)
    set_threads()
    if teacher is not None:
        _log(f"loading the teacher from {teacher}", started)
        model, tokenizer = models.load_pretrained(teacher)
    else:
        model, tokenizer = train_teacher(cfg, splits, started)
    result = distill_to_student(cfg, splits, model, tokenizer, started)
    summary = {k: v for k, v in result.items() if k not in ("student", "history")}
    summary.update(save_student(result["student"], tokenizer, out))
    summary.update(config=asdict(cfg), teacher=str(teacher or f"{cfg.teacher_model or cfg.model}, fine-tuned here"),
                   wall_seconds=round(time.perf_counter() - started, 1), peak_memory_mb=round(peak_memory_mb(), 1))
    write_distill_report(summary, result["history"], out)
    _log(f"done: {out / 'report.md'}", started)
    return summary
