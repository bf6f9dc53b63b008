"""Fine-tune, distil, or both? Each route to a target domain run at one label budget and seed, its work counted,
and the decision map (label budget x deployment budget) tabled and drawn.

Every route starts from the same *source model* (fine-tuned on the source domain and saved once):

* **fine-tune**: the source model trained further on the ``b`` target labels and deployed as it is (teacher size);
* **distil**: that fine-tuned model, as teacher, labels unlabeled target text with its soft targets and a small
  student learns them; the labels reach the student only through its teacher;
* **both**: the distilled student then fine-tuned on the ``b`` labels itself;
* and for reference, **labels only**: the same student trained on the ``b`` labels alone, no teacher.

At 0 labels the fine-tuned model is the source model and "both" is "distil". Each stage's seconds are measured
and the sentences it processes are counted, so its FLOPs are a count times a measured cost per sentence
(``stage_flops``): the same numbers on any machine.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from datasets import Dataset

from . import distill, flops, models, stats, students, train
from .infer import predict
from .metrics import accuracy
from .runtime import release_memory

FINE_TUNE, DISTIL, BOTH, LABELS_ONLY = "fine-tune", "distil", "both", "labels only"
ROUTES = (FINE_TUNE, DISTIL, BOTH, LABELS_ONLY)
TEACHER_TRAINING, LABELLING, DISTILLATION, STUDENT_TRAINING = (
    "teacher fine-tuning", "teacher labelling", "student distillation", "student fine-tuning")
STAGES = (TEACHER_TRAINING, LABELLING, DISTILLATION, STUDENT_TRAINING)
ROUTE_STAGES = {FINE_TUNE: (TEACHER_TRAINING,), DISTIL: (TEACHER_TRAINING, LABELLING, DISTILLATION),
                BOTH: STAGES, LABELS_ONLY: (STUDENT_TRAINING,)}   # what each route has to run, in order
TEACHER_SPEED, STUDENT_SPEED = "teacher speed", "student speed"
DEPLOYED = {TEACHER_SPEED: ROUTES, STUDENT_SPEED: (DISTIL, BOTH, LABELS_ONLY)}   # routes each deployment allows
ROUTE_COLOURS = {FINE_TUNE: "tab:blue", DISTIL: "tab:orange", BOTH: "tab:green", LABELS_ONLY: "tab:grey"}


@dataclass(frozen=True)
class Plan:
    """What every route shares at every budget: the student, the epochs, the rates, the lengths."""

    epochs_at: Mapping[int, int]          # label budget -> epochs over those labels (fewer labels, more passes)
    student: str = "cnn"
    distil_epochs: int = 2
    temperature: float = 2.0
    batch_size: int = 16                  # sentences per step on labels
    transfer_batch_size: int = 32         # sentences per distillation step: the cheap student takes larger batches
    lr: float = 1e-4                      # fine-tuning a trained model: the teacher, and the student in "both"
    max_length: int = 64
    min_distil_sentences: int = 0         # a small transfer set gets more epochs, up to this many sentences seen
    frozen_embeddings: bool = False       # keep every model's word embeddings as they came (trains faster)
    student_lr: float | None = None       # the student's rate on transfer sets and labels alone (None: its kind's)

    def epochs(self, budget: int) -> int:
        """Epochs over ``budget`` labels: the plan's entry, else that of the nearest smaller budget it has."""
        known = [b for b in sorted(self.epochs_at) if b <= budget]
        if not known:
            raise ValueError(f"no epochs planned for {budget} labels; epochs_at covers {sorted(self.epochs_at)}")
        return self.epochs_at[known[-1]]

    def distil_epochs_for(self, size: int) -> int:
        """Epochs over a transfer set of ``size`` sentences: ``distil_epochs``, more for a set too small for it."""
        return max(self.distil_epochs, math.ceil(self.min_distil_sentences / max(1, size)))

    def fit_settings(self, lr: float, batch_size: int | None = None) -> dict:
        """Keyword arguments of ``train.fit`` shared by every stage."""
        return {"batch_size": batch_size or self.batch_size, "lr": lr, "max_length": self.max_length,
                "progress": False}

    @property
    def student_rate(self) -> float:
        """The student's learning rate when it learns from scratch: the plan's, else ``students.learning_rate``."""
        return self.student_lr or students.learning_rate(self.student)

    def prepare(self, model):
        """The model, its word embeddings frozen if the plan says so."""
        if self.frozen_embeddings:
            embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.embed
            embeddings.weight.requires_grad_(False)
        return model


@dataclass
class Run:
    """One route at one budget and seed: test accuracy and logits, seconds and sentences of each stage it ran."""

    accuracy: float
    logits: np.ndarray
    seconds: dict = field(default_factory=dict)
    sentences: dict = field(default_factory=dict)

    def total_seconds(self) -> float:
        """Seconds of every stage together."""
        return float(sum(self.seconds.values()))


def plan_student(teacher, tokenizer, seed: int, plan: Plan):
    """The plan's student, its fresh weights drawn from ``seed``."""
    return plan.prepare(students.make_student(teacher, tokenizer, plan.student, seed=seed))


def train_seconds(history: train.History) -> float:
    """Seconds a ``fit`` spent training (its per-epoch evaluation left out)."""
    return float(sum(row["seconds"] for row in history.epochs))


def fine_tune(source: str | Path, labels: Dataset | None, seed: int, plan: Plan):
    """The source model trained on ``labels`` (none: the source model itself); ``(model, tokenizer, seconds)``."""
    model, tokenizer = models.load_pretrained(source, seed=seed)
    plan.prepare(model)
    if labels is None or len(labels) == 0:
        return model, tokenizer, 0.0
    history = train.fit(model, labels, tokenizer=tokenizer, epochs=plan.epochs(len(labels)), seed=seed,
                        **plan.fit_settings(plan.lr))
    return model, tokenizer, train_seconds(history)


def label(teacher, tokenizer, transfer: Dataset, plan: Plan) -> tuple[Dataset, float]:
    """``transfer`` with the teacher's logits, and the seconds the teacher took (nothing cached: each is counted)."""
    started = time.perf_counter()
    labelled = distill.with_teacher_logits(
        transfer, predict(teacher, transfer, tokenizer, max_length=plan.max_length))
    return labelled, time.perf_counter() - started


def distil(teacher, tokenizer, transfer: Dataset, seed: int, plan: Plan):
    """A new student distilled on ``transfer`` (which carries teacher logits); ``(student, seconds, sentences)``."""
    student = plan_student(teacher, tokenizer, seed, plan)
    epochs = plan.distil_epochs_for(len(transfer))
    history = train.fit(student, transfer, distill.Distillation(temperature=plan.temperature, alpha=1.0),
                        tokenizer=tokenizer, epochs=epochs, seed=seed,
                        **plan.fit_settings(plan.student_rate, plan.transfer_batch_size))
    return student, train_seconds(history), len(transfer) * epochs


def score(model, tokenizer, test: Dataset, plan: Plan) -> tuple[float, np.ndarray]:
    """Test accuracy and logits."""
    logits = predict(model, test, tokenizer, max_length=plan.max_length)
    return accuracy(test["label"], logits.argmax(-1)), logits


def train_alone(teacher, tokenizer, labels: Dataset, seed: int, plan: Plan, epochs: int | None = None):
    """The plan's student trained on ``labels`` alone, no teacher (the reference a distilled student must beat).

    ``teacher`` only lends the student its shape and embeddings; ``epochs`` defaults to the plan's for that many
    labels. Returns ``(student, seconds)``.
    """
    alone = plan_student(teacher, tokenizer, seed, plan)
    history = train.fit(alone, labels, tokenizer=tokenizer, epochs=epochs or plan.epochs(len(labels)), seed=seed,
                        **plan.fit_settings(plan.student_rate))
    return alone, train_seconds(history)


def distil_each(teacher, tokenizer, transfer_sets: Mapping[str, Dataset], seed: int, test: Dataset,
                plan: Plan) -> dict[str, float]:
    """Test accuracy of a student distilled on each transfer set (which carry teacher logits), all from ``seed``.

    Every student starts from the same weights and sees the same schedule: the transfer set is the only difference.
    """
    scores = {}
    for name, transfer in transfer_sets.items():
        student, _, _ = distil(teacher, tokenizer, transfer, seed, plan)
        scores[name] = score(student, tokenizer, test, plan)[0]
        del student
        release_memory()
    return scores


def _student_routes(teacher, tokenizer, labelled: Dataset, labels: Dataset | None, seed: int, plan: Plan,
                    test: Dataset, base: Run) -> dict[str, Run]:
    """Distil, then (given labels) fine-tune the same student on them, and train a student on the labels alone."""
    student, seconds, seen = distil(teacher, tokenizer, labelled, seed, plan)
    routes = {DISTIL: Run(*score(student, tokenizer, test, plan), {**base.seconds, DISTILLATION: seconds},
                          {**base.sentences, DISTILLATION: seen})}
    if labels is not None and len(labels):
        epochs = plan.epochs(len(labels))
        history = train.fit(student, labels, tokenizer=tokenizer, epochs=epochs, seed=seed,
                            **plan.fit_settings(plan.lr))
        routes[BOTH] = Run(*score(student, tokenizer, test, plan),
                           {**routes[DISTIL].seconds, STUDENT_TRAINING: train_seconds(history)},
                           {**routes[DISTIL].sentences, STUDENT_TRAINING: len(labels) * epochs})
        del student
        alone, seconds = train_alone(teacher, tokenizer, labels, seed, plan)
        routes[LABELS_ONLY] = Run(*score(alone, tokenizer, test, plan), {STUDENT_TRAINING: seconds},
                                  {STUDENT_TRAINING: len(labels) * epochs})
    return routes


def run_budget(source: str | Path, labels_by_seed: Mapping[int, Dataset | None], transfer: Dataset, test: Dataset,
               plan: Plan) -> dict[str, list[Run]]:
    """Every route at one label budget, once per seed (the keys of ``labels_by_seed``): ``{route: [Run, ...]}``.

    Without labels there is nothing to fine-tune: the teacher is the source model for every seed, it labels the
    transfer set once, and the seeds vary the students alone ("both" is then "distil" and is left out).
    """
    runs: dict[str, list[Run]] = {route: [] for route in ROUTES}
    teacher = None
    for seed, labels in labels_by_seed.items():
        n = 0 if labels is None else len(labels)
        if teacher is None:
            teacher, tokenizer, taught = fine_tune(source, labels, seed, plan)
            labelled, labelling = label(teacher, tokenizer, transfer, plan)
            fine_tuned = Run(*score(teacher, tokenizer, test, plan), {TEACHER_TRAINING: taught},
                             {TEACHER_TRAINING: n * plan.epochs(n) if n else 0})
            base = Run(fine_tuned.accuracy, fine_tuned.logits, {**fine_tuned.seconds, LABELLING: labelling},
                       {**fine_tuned.sentences, LABELLING: len(transfer)})
        runs[FINE_TUNE].append(fine_tuned)
        for route, run in _student_routes(teacher, tokenizer, labelled, labels, seed, plan, test, base).items():
            runs[route].append(run)
        if n:   # with no labels the source model stays the teacher of every seed
            teacher = labelled = None
        release_memory()
    return {route: seeds for route, seeds in runs.items() if seeds}


# ---------------------------------------------------------------------------------------------
# The decision map: tables, the recommendation per cell, costs
# ---------------------------------------------------------------------------------------------
Results = Mapping[int, Mapping[str, Sequence[Run]]]   # label budget -> route -> one Run per seed


def accuracies(results: Results) -> dict[str, dict[int, list[float]]]:
    """``{route: {budget: [accuracy per seed]}}``: the shape ``stats`` and ``plots.plot_budget_curves`` read."""
    out: dict[str, dict[int, list[float]]] = {}
    for budget, routes in results.items():
        for route, runs in routes.items():
            out.setdefault(route, {})[budget] = [run.accuracy for run in runs]
    return out


def decision_map(results: Results, digits: int = 3):
    """Rows: label budgets; columns: routes; cells: test accuracy, mean ± sd over seeds (blank: cannot run)."""
    import pandas as pd
    table = pd.DataFrame({route: {budget: stats.fmt(runs, digits) for budget, runs in by_budget.items()}
                          for route, by_budget in accuracies(results).items()}).reindex(sorted(results)).fillna("")
    table.index.name = "target labels"
    return table


def recommend(results: Results, budget: int, deployment: str) -> dict:
    """The most accurate route a deployment allows at ``budget``, and the others within noise of it (``ties``)."""
    if deployment not in DEPLOYED:
        raise ValueError(f"deployment must be one of {list(DEPLOYED)}, got {deployment!r}")
    scores = {route: [run.accuracy for run in runs] for route, runs in results[budget].items()
              if route in DEPLOYED[deployment]}
    if not scores:
        raise ValueError(f"no route that {deployment} allows was run at {budget} labels")
    best = max(scores, key=lambda route: stats.mean_sd(scores[route])[0])
    ties = [route for route in scores
            if route != best and not stats.compare(scores[best], scores[route])["beyond_noise"]]
    mean, sd = stats.mean_sd(scores[best])
    return {"route": best, "ties": ties, "mean": mean, "sd": sd}


def where_ahead(results: Results, a: str, b: str) -> dict[str, list[int]]:
    """The budgets where route ``a`` beats ``b`` beyond noise, where ``b`` beats ``a``, and where neither does."""
    scores = accuracies(results)
    out: dict[str, list[int]] = {f"{a} ahead": [], f"{b} ahead": [], "within noise": []}
    for budget in sorted(set(scores.get(a, {})) & set(scores.get(b, {}))):
        c = stats.compare(scores[a][budget], scores[b][budget])
        ahead = a if c["difference"] > 0 else b
        out[f"{ahead} ahead" if c["beyond_noise"] else "within noise"].append(budget)
    return out


def recommendations(results: Results) -> dict[str, dict[int, dict]]:
    """``recommend`` for every deployment and budget: what ``plots.plot_decision_chart`` draws."""
    return {deployment: {budget: recommend(results, budget, deployment) for budget in sorted(results)}
            for deployment in DEPLOYED}


def decision_table(results: Results):
    """Rows: deployment budgets; columns: label budgets; cells: the route to take (``≈`` those within noise of it)."""
    import pandas as pd
    table = pd.DataFrame({deployment: {budget: " ≈ ".join([pick["route"], *pick["ties"]]) + f" ({pick['mean']:.3f})"
                                       for budget, pick in row.items()}
                          for deployment, row in recommendations(results).items()}).T
    table.columns.name = "target labels"
    return table


def stage_flops(teacher, student, tokenizer, sample: Dataset, plan: Plan) -> dict[str, float]:
    """FLOPs per sentence of each stage, counted on ``sample`` (labelled target sentences), batched like the stage."""
    settings = {"tokenizer": tokenizer, "batch_size": plan.batch_size, "max_length": plan.max_length}
    with_logits = distill.with_teacher_logits(sample, predict(teacher, sample, tokenizer, max_length=plan.max_length))
    return {TEACHER_TRAINING: flops.training_flops(teacher, sample, **settings),
            LABELLING: flops.inference_flops(teacher, sample, tokenizer, max_length=plan.max_length),
            DISTILLATION: flops.training_flops(student, with_logits, distill.Distillation(
                temperature=plan.temperature, alpha=1.0), **{**settings, "batch_size": plan.transfer_batch_size}),
            STUDENT_TRAINING: flops.training_flops(student, sample, **settings)}


def route_costs(results: Results, per_sentence: Mapping[str, float]):
    """Per budget and route: training seconds (mean over seeds, measured), FLOPs (counted sentences x per sentence)."""
    import pandas as pd
    rows = {}
    for budget in sorted(results):
        for route, runs in results[budget].items():
            work = [sum(count * per_sentence[stage] for stage, count in run.sentences.items()) for run in runs]
            rows[(budget, route)] = {"seconds": float(np.mean([run.total_seconds() for run in runs])),
                                     "FLOPs": float(np.mean(work))}
    table = pd.DataFrame(rows).T
    table.index.names = ["target labels", "route"]
    return table


def payback(extra_training_flops: float, teacher_flops: float, student_flops: float) -> float:
    """Sentences a student must serve before its cheaper inference repays the extra training its route cost."""
    if teacher_flops <= student_flops:
        raise ValueError("the student does not do less work per sentence than the teacher: it never pays back")
    return extra_training_flops / (teacher_flops - student_flops)


def inherited_errors(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: Sequence[int]) -> dict:
    """A student's error rate where its teacher is wrong and where it is right: how much of the teacher it inherits."""
    labels = np.asarray(labels)
    teacher_right = np.asarray(teacher_logits).argmax(-1) == labels
    student_wrong = np.asarray(student_logits).argmax(-1) != labels
    if teacher_right.all() or not teacher_right.any():
        raise ValueError("the teacher is right everywhere or nowhere: there is nothing to split the errors by")
    return {"where the teacher is wrong": float(student_wrong[~teacher_right].mean()),
            "where the teacher is right": float(student_wrong[teacher_right].mean())}


def transfer_curve(teacher, tokenizer, pool: Dataset, sizes: Sequence[int], seeds: Sequence[int], test: Dataset,
                   plan: Plan) -> dict[int, list[float]]:
    """Student accuracy by transfer-set size: the teacher labels ``pool`` once; each seed draws its own subsets."""
    labelled, _ = label(teacher, tokenizer, pool, plan)
    curve: dict[int, list[float]] = {size: [] for size in sizes}
    for seed in seeds:
        drawn = labelled.shuffle(seed=seed)
        for size in sizes:
            student, _, _ = distil(teacher, tokenizer, drawn.select(range(min(size, len(drawn)))), seed, plan)
            curve[size].append(score(student, tokenizer, test, plan)[0])
            del student
            release_memory()
    return curve
