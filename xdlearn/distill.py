r"""Knowledge distillation as objectives of the one loop, teacher-logit caching, and transfer sets.

The student learns from the teacher's *softened* distribution (Hinton et al., 2015):

.. math::
    \mathcal{L} = \alpha\,T^2\,\mathrm{KL}\!\left(\sigma(z_t/T)\,\Vert\,\sigma(z_s/T)\right)
                  + (1-\alpha)\,\mathrm{CE}(z_s, y)

plus, optionally, hidden-state and attention matching between mapped layers (Sun et al. 2019;
Jiao et al. 2020). Caching the teacher's logits means the teacher runs once, not once per epoch; caching a
fine-tuned teacher (``fine_tuned_teacher``) means a large one trains once per machine.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn

from .data import quiet_datasets
from .infer import predict
from .objectives import Objective, model_inputs

TEACHER_LOGITS = "teacher_logits"


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 2.0) -> torch.Tensor:
    r""":math:`T^2\,\mathrm{KL}(p_t^T \Vert p_s^T)` averaged over the batch (``batchmean``, the true KL).

    The :math:`T^2` keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    """
    t = temperature
    log_student = F.log_softmax(student_logits / t, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t


def soft_targets_by_class(logits: np.ndarray, labels, temperature: float = 1.0) -> np.ndarray:
    r"""A model's mean softened distribution per true class (rows) over classes (columns): where dark knowledge goes.

    Row ``c`` averages :math:`\sigma(z/T)` over the sentences labelled ``c``; the off-diagonal mass is what soft
    targets tell a student beyond the label (e.g. how much of a positive sentence the teacher reads as neutral).
    """
    from .metrics import softmax
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"expected (sentences, classes) logits and one label per sentence, "
                         f"got logits of shape {logits.shape} and {len(labels)} labels")
    classes = logits.shape[1]
    missing = [c for c in range(classes) if not (labels == c).any()]
    if missing or not np.isin(labels, range(classes)).all():
        raise ValueError(f"every class 0..{classes - 1} needs a sentence and no label may lie outside them; "
                         f"classes without a sentence: {missing}, labels seen: {sorted(set(labels.tolist()))}")
    probs = softmax(logits, temperature)
    return np.stack([probs[labels == c].mean(0) for c in range(classes)])


def use_eager_attention(model: nn.Module | None) -> None:
    """Switch a transformers model to eager attention, the implementation that returns attention maps."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")


def _teacher_forward(teacher: nn.Module, batch: dict, hidden: bool, attention: bool):
    """Run the frozen teacher on a batch (no gradients), asking only for what the losses need."""
    teacher.eval()
    with torch.no_grad():
        return teacher(**model_inputs(batch), output_hidden_states=hidden, output_attentions=attention)


class Distillation(Objective):
    """Soft targets (+ hard labels with weight ``1 - alpha``), optional hidden and attention matching.

    ``teacher`` may be None when batches carry cached ``teacher_logits`` (see ``cache_teacher_logits``);
    hidden-state or attention matching needs the live teacher. The teacher is not a submodule: its
    weights are neither trained nor saved with the objective.
    """

    def __init__(self, teacher: nn.Module | None = None, temperature: float = 2.0, alpha: float = 0.5,
                 hidden: "HiddenStateMatching | None" = None, hidden_weight: float = 1.0,
                 attention: "AttentionMatching | None" = None, attention_weight: float = 1.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self._teacher = [teacher]  # a list hides it from nn.Module registration
        self.temperature, self.alpha = temperature, alpha
        self.hidden, self.hidden_weight = hidden, hidden_weight
        self.attention, self.attention_weight = attention, attention_weight

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0]

    def forward(self, model: nn.Module, batch: dict) -> dict:
        want_h, want_a = self.hidden is not None, self.attention is not None
        if want_a:  # fused (SDPA) attention never materialises the maps we want to match
            use_eager_attention(model)
            use_eager_attention(self.teacher)
        kwargs = {"output_hidden_states": True} if want_h else {}
        if want_a:
            kwargs["output_attentions"] = True
        student = model(**model_inputs(batch), **kwargs)
        teacher_out = None
        if TEACHER_LOGITS in batch and not (want_h or want_a):
            teacher_logits = batch[TEACHER_LOGITS]
        elif self.teacher is not None:
            teacher_out = _teacher_forward(self.teacher, batch, want_h, want_a)
            teacher_logits = teacher_out.logits
        else:
            raise ValueError("Distillation needs a teacher, or batches with cached 'teacher_logits'")
        soft = soft_target_loss(student.logits, teacher_logits, self.temperature)
        out = {"soft_loss": soft.detach()}
        loss = self.alpha * soft
        if self.alpha < 1.0:
            if "labels" not in batch:
                raise ValueError("alpha < 1 mixes in hard labels but this batch has none; "
                                 "use alpha=1.0 on an unlabeled transfer set")
            hard = F.cross_entropy(student.logits, batch["labels"])
            loss = loss + (1 - self.alpha) * hard
            out["hard_loss"] = hard.detach()
        if want_h:
            h = self.hidden(student.hidden_states, teacher_out.hidden_states, batch["attention_mask"])
            loss, out["hidden_loss"] = loss + self.hidden_weight * h, h.detach()
        if want_a:
            a = self.attention(student.attentions, teacher_out.attentions, batch["attention_mask"])
            loss, out["attention_loss"] = loss + self.attention_weight * a, a.detach()
        return {**out, "loss": loss, "logits": student.logits}


class HiddenStateMatching(nn.Module):
    r"""Match student hidden states to teacher ones at mapped layers: MSE or :math:`1-\cos`.

    ``layer_map`` maps student hidden-state indices to teacher ones (index 0 = embeddings output,
    ``i`` = output of layer ``i``). When widths differ a learned linear projection maps the student's
    states into the teacher's space; it trains with the student.
    """

    def __init__(self, layer_map: Mapping[int, int], student_dim: int, teacher_dim: int,
                 loss: str = "mse"):
        super().__init__()
        if loss not in ("mse", "cosine"):
            raise ValueError(f"loss must be 'mse' or 'cosine', got {loss!r}")
        self.layer_map, self.loss = dict(layer_map), loss
        self.project = nn.ModuleDict({str(s): nn.Linear(student_dim, teacher_dim)
                                      for s in self.layer_map}) if student_dim != teacher_dim else None

    def forward(self, student_states, teacher_states, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        total = 0.0
        for s, t in self.layer_map.items():
            hs, ht = student_states[s], teacher_states[t].detach()
            if self.project is not None:
                hs = self.project[str(s)](hs)
            if self.loss == "mse":
                per_token = ((hs - ht) ** 2).mean(-1, keepdim=True)
            else:
                per_token = 1 - F.cosine_similarity(hs, ht, dim=-1).unsqueeze(-1)
            total = total + (per_token * mask).sum() / mask.sum()
        return total / len(self.layer_map)


class AttentionMatching(nn.Module):
    """MSE between student and teacher attention maps at mapped layers (head-averaged if counts differ)."""

    def __init__(self, layer_map: Mapping[int, int]):
        super().__init__()
        self.layer_map = dict(layer_map)  # student layer index -> teacher layer index (0-based)

    def forward(self, student_attn, teacher_attn, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask[:, None, :, None].float() * attention_mask[:, None, None, :].float()
        total = 0.0
        for s, t in self.layer_map.items():
            a_s, a_t = student_attn[s], teacher_attn[t].detach()
            if a_s.shape[1] != a_t.shape[1]:
                a_s, a_t = a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True)
            total = total + (((a_s - a_t) ** 2) * mask).sum() / (mask.sum() * a_s.shape[1])
        return total / len(self.layer_map)


# ---------------------------------------------------------------------------------------------
# Teacher-logit caching: run the teacher once per (teacher, transfer set), not once per epoch
# ---------------------------------------------------------------------------------------------
def model_fingerprint(model: nn.Module) -> str:
    """A hash of every weight: a retrained or different teacher gets a different cache entry."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(ds: Dataset, max_length: int) -> str:
    """A hash of the transfer set's text (in order) and the truncation length."""
    digest = hashlib.sha256(str(max_length).encode())
    for text in ds["text"]:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_teacher_logits(teacher: nn.Module, ds: Dataset, tokenizer, cache_dir: str | Path | None = None,
                         batch_size: int = 64, max_length: int = 128) -> Dataset:
    """Return ``ds`` with a ``teacher_logits`` column, computed once and reused while nothing changed.

    The cache file's name is derived from the teacher's weights and the data, so a changed teacher
    or transfer set can never be served stale logits.
    """
    from .corpus import cache_dir as default_cache
    folder = Path(cache_dir) if cache_dir else default_cache() / "teacher-logits"
    key = f"{model_fingerprint(teacher)}-{data_fingerprint(ds, max_length)}"
    path = folder / f"{key}.npy"
    if path.exists():
        logits = np.load(path)
    else:
        logits = predict(teacher, ds, tokenizer, batch_size=batch_size, max_length=max_length)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp.npy"   # one per process: two writers never share a file
        np.save(tmp, logits)
        tmp.replace(path)
    return with_teacher_logits(ds, logits)


def with_teacher_logits(ds: Dataset, logits: np.ndarray) -> Dataset:
    """``ds`` with a ``teacher_logits`` column (replacing any it had): what ``Distillation`` reads from a batch."""
    if len(logits) != len(ds):
        raise ValueError(f"{len(logits)} rows of teacher logits for {len(ds)} sentences")
    with quiet_datasets():
        if TEACHER_LOGITS in ds.column_names:
            ds = ds.remove_columns(TEACHER_LOGITS)
        return ds.add_column(TEACHER_LOGITS, np.asarray(logits, dtype=np.float32).tolist())


# ---------------------------------------------------------------------------------------------
# One student kind distilled once per seed: what a comparison of students rests on
# ---------------------------------------------------------------------------------------------
@dataclass
class SeedRuns:
    """A student kind distilled once per seed: each seed's test logits and history, and the first seed's model."""

    logits: list[np.ndarray] = field(default_factory=list)
    histories: list = field(default_factory=list)
    model: nn.Module | None = None   # the first seed's student, when asked for: size, speed and FLOPs need one

    def scores(self, labels: Sequence[int], teacher_logits: np.ndarray) -> dict[str, list[float]]:
        """Per seed: test accuracy, agreement with the teacher and calibration error, for ``stats`` to compare."""
        from .metrics import accuracy, expected_calibration_error, softmax
        teacher_classes = np.asarray(teacher_logits).argmax(-1)
        return {"accuracy": [accuracy(labels, z.argmax(-1)) for z in self.logits],
                "agreement": [float((z.argmax(-1) == teacher_classes).mean()) for z in self.logits],
                "ECE": [expected_calibration_error(softmax(z), labels) for z in self.logits]}


def distil_seeds(teacher: nn.Module, tokenizer, kind: str, transfer: Dataset, test: Dataset, seeds: Sequence[int],
                 make_objective: Callable[[], Objective], epochs: int, keep_first: bool = False,
                 **fit_kwargs) -> SeedRuns:
    """A fresh ``kind`` student distilled on ``transfer`` once per seed, scored on ``test``: one run is one draw.

    A seed sets the student's new weights (``students.make_student``), its batch order and its dropout. Each seed
    gets a new objective from ``make_objective``, so an objective's own weights (a hidden-state projection) never
    carry over from one seed to the next. The rate is the kind's (``students.learning_rate``) unless ``fit_kwargs``
    names one; ``keep_first`` keeps the first seed's student in ``model``.
    """
    from .runtime import release_memory
    from .students import learning_rate, make_student
    from .train import fit
    if not seeds:
        raise ValueError("distil_seeds needs at least one seed")
    settings = {"lr": learning_rate(kind), "progress": False, **fit_kwargs}
    runs = SeedRuns()
    for seed in seeds:
        student = make_student(teacher, tokenizer, kind, seed=seed)
        runs.histories.append(fit(student, transfer, make_objective(), tokenizer=tokenizer, epochs=epochs,
                                  seed=seed, **settings))
        runs.logits.append(predict(student, test, tokenizer, max_length=settings.get("max_length", 128)))
        if keep_first and runs.model is None:
            runs.model = student
        del student
        release_memory()
    return runs


# ---------------------------------------------------------------------------------------------
# A chain of students: teacher -> student -> smaller student, each against the same student on labels alone
# ---------------------------------------------------------------------------------------------
#: Published students of BERT-base, quoted for scale beside measured ones (GLUE; other hardware), never measured here:
#: name -> (share of the teacher's score kept, speed-up over the teacher)
PUBLISHED_STUDENTS = {"DistilBERT (Sanh et al. 2019)": (0.97, 1.6), "TinyBERT-4 (Jiao et al. 2020)": (0.968, 9.4)}


@dataclass(frozen=True)
class ChainStep:
    """One link of a distillation chain: a pretrained model by name (``base``), or a student ``kind`` cut from the link above.

    A ``base`` link reads text with its own tokenizer, so it learns from the logits above it over text, not token ids.
    ``lr`` defaults to the kind's rate (``students.learning_rate``), or the fine-tuning rate for a pretrained ``base``.
    """

    name: str
    base: str | None = None
    kind: str | None = None
    lr: float | None = None

    def __post_init__(self):
        if (self.base is None) == (self.kind is None):
            raise ValueError(f"chain link {self.name!r}: give exactly one of base= (a pretrained model) or kind= "
                             f"(a student cut from the link above), got base={self.base!r}, kind={self.kind!r}")

    def build(self, above: nn.Module, above_tokenizer, labels, seed: int) -> tuple[nn.Module, object]:
        """This link's fresh student (and its tokenizer), drawn from ``seed``."""
        from .models import load_pretrained
        from .students import make_student
        if self.base is not None:
            return load_pretrained(self.base, labels=labels, seed=seed)
        return make_student(above, above_tokenizer, self.kind, seed=seed), above_tokenizer

    def rate(self) -> float:
        """The peak learning rate this link trains at."""
        from .students import COPIED_LAYERS_LR, learning_rate
        return self.lr if self.lr is not None else learning_rate(self.kind) if self.kind else COPIED_LAYERS_LR


@dataclass
class ChainRuns:
    """Per link and seed: test accuracy distilled and on labels alone; the first seed's distilled students."""

    distilled: dict[str, list[float]] = field(default_factory=dict)
    labels_alone: dict[str, list[float]] = field(default_factory=dict)
    first: dict[str, tuple[nn.Module, object]] = field(default_factory=dict)   # name -> (student, tokenizer)

    def kept(self, teacher_accuracy: float) -> dict[str, list[float]]:
        """Each seed's accuracy as a share of the teacher's (1.0 = all of it)."""
        return {name: [a / teacher_accuracy for a in runs] for name, runs in self.distilled.items()}

    def gains(self) -> dict[str, list[float]]:
        """Each seed's distilled accuracy minus the same seed's accuracy on labels alone."""
        return {name: [a - b for a, b in zip(runs, self.labels_alone[name])] for name, runs in self.distilled.items()}


def distil_chain(teacher: nn.Module | None, tokenizer, transfer: Dataset, labelled: Dataset, test: Dataset,
                 steps: Sequence[ChainStep], seeds: Sequence[int], distil_epochs: int, alone_epochs: int,
                 temperature: float = 2.0, batch_size: int = 32, alone_batch_size: int = 16) -> ChainRuns:
    """Teacher -> link 1 -> link 2 ...: each link distilled on the logits of the link above over ``transfer``'s text.

    ``transfer`` carries the teacher's cached logits (``cache_teacher_logits``): the teacher never runs here, and may
    be None (with its tokenizer) when the first link is a pretrained ``base``, which needs nothing of it. Each
    seed distils the whole chain again (a link learns from that seed's link above), and trains each link on
    ``labelled`` alone from the same start but with no teacher anywhere: a ``base`` link from its pretrained weights,
    a ``kind`` link cut from the untrained link above (the first from the teacher, as ``make_student`` cuts it).
    """
    from .runtime import release_memory
    if not seeds or not steps:
        raise ValueError("distil_chain needs at least one seed and one link")
    if TEACHER_LOGITS not in transfer.column_names:
        raise ValueError(f"the transfer set has no '{TEACHER_LOGITS}' column: cache the teacher's logits over it first")
    if teacher is None and steps[0].kind is not None:
        raise ValueError(f"chain link {steps[0].name!r} is cut from the teacher: pass the teacher, not None")
    labels = labelled.features["label"].names   # the class names every new head is made for
    runs = ChainRuns()
    settings = dict(temperature=temperature, batch_size=batch_size, alone_batch_size=alone_batch_size,
                    distil_epochs=distil_epochs, alone_epochs=alone_epochs)
    for seed in seeds:
        _chain_seed(runs, teacher, tokenizer, transfer, labelled, test, steps, labels, seed, settings)
        release_memory()
    return runs


def _chain_seed(runs: ChainRuns, teacher: nn.Module, tokenizer, transfer: Dataset, labelled: Dataset, test: Dataset,
                steps: Sequence[ChainStep], labels: list, seed: int, settings: Mapping) -> None:
    """One seed of ``distil_chain``: every link distilled from the one above, and its twin trained on labels alone."""
    from .metrics import accuracy
    from .runtime import release_memory
    from .train import fit
    above, untrained, targets = (teacher, tokenizer), (teacher, tokenizer), transfer
    truth = list(test["label"])
    for index, step in enumerate(steps):
        if index:   # the link above is a student now: its logits over the same text are the targets
            targets = with_teacher_logits(transfer, predict(above[0], transfer, above[1]))
        student, student_tokenizer = step.build(*above, labels, seed)
        fit(student, targets, Distillation(None, settings["temperature"], alpha=1.0), tokenizer=student_tokenizer,
            epochs=settings["distil_epochs"], batch_size=settings["batch_size"], lr=step.rate(), seed=seed,
            progress=False)
        runs.distilled.setdefault(step.name, []).append(
            accuracy(truth, predict(student, test, student_tokenizer).argmax(-1)))
        untrained = step.build(*untrained, labels, seed)
        alone = copy.deepcopy(untrained[0])
        fit(alone, labelled, tokenizer=untrained[1], epochs=settings["alone_epochs"],
            batch_size=settings["alone_batch_size"], lr=step.rate(), seed=seed, progress=False)
        runs.labels_alone.setdefault(step.name, []).append(accuracy(truth, predict(alone, test, untrained[1]).argmax(-1)))
        del alone
        release_memory()   # the twin and both optimisers: their heap goes back before the next link trains
        runs.first.setdefault(step.name, (student, student_tokenizer))
        above = (student, student_tokenizer)


# ---------------------------------------------------------------------------------------------
# Fine-tuned teachers, cached the same way: a large teacher trains once per machine
# ---------------------------------------------------------------------------------------------
#: ``fit`` arguments that change how a run is watched or resumed, not the weights it ends with
_NOT_IN_KEY = ("progress", "checkpoint_dir", "resume", "monitor", "eval_data")
TEACHER_FILES = ("config.json", "model.safetensors")


def teacher_key(base: nn.Module, train_set: Dataset, settings: Mapping) -> str:
    """A hash of the base weights (with the seeded new head), the labelled data and the training settings."""
    digest = hashlib.sha256(model_fingerprint(base).encode())
    digest.update(data_fingerprint(train_set, settings.get("max_length", 128)).encode())
    kept = {k: v for k, v in settings.items() if k not in _NOT_IN_KEY}
    digest.update(json.dumps([list(train_set["label"]), kept], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def fine_tuned_teacher(base: str | Path, train_set: Dataset, labels, seed: int = 0,
                       cache_dir: str | Path | None = None, frozen_layers: int | None = None,
                       **fit_kwargs) -> tuple[nn.Module, object, Path]:
    """``base`` fine-tuned on ``train_set`` (as ``train.fine_tune``), read from the cache when it was trained before.

    The entry is named by :func:`teacher_key`, so other base weights, data or settings never get a stale teacher,
    and it is saved with a manifest: a damaged entry is trained again. ``frozen_layers=n`` freezes the embeddings
    and the bottom ``n`` layers (``strategies.freeze``): AdamW then keeps no gradient or moments for them, which is
    what lets a large teacher fine-tune in little memory. Returns (model, tokenizer, its folder);
    :func:`teacher_training` reads how the entry was trained.
    """
    from .corpus import cache_dir as default_cache, manifest_problem
    from .models import load_pretrained
    model, tokenizer = load_pretrained(base, labels=labels, seed=seed)
    settings = {"base": str(base), "seed": seed, **fit_kwargs}
    if frozen_layers is not None:  # only then: the keys of teachers trained whole stay as they were
        settings["frozen_layers"] = frozen_layers
    path = (Path(cache_dir) if cache_dir else default_cache() / "teachers") / teacher_key(model, train_set, settings)
    problem = manifest_problem(path, TEACHER_FILES) if path.exists() else "not trained yet"
    if problem is None:
        print(f"xdlearn: reusing the fine-tuned teacher cached in {path}", file=sys.stderr, flush=True)
        model, tokenizer = load_pretrained(path)
        return model, tokenizer, path
    if path.exists():
        print(f"xdlearn: the cached teacher is damaged ({problem}); training it again", file=sys.stderr, flush=True)
    _train_teacher(model, tokenizer, train_set, path, seed, frozen_layers, fit_kwargs)
    for parameter in model.parameters():  # as it will load from the cache next time: nothing frozen
        parameter.requires_grad = True
    return model, tokenizer, path


TEACHER_RECORD = "training.json"   # beside a cached teacher: how long it trained, how many weights, what memory


def _train_teacher(model: nn.Module, tokenizer, train_set: Dataset, path: Path, seed: int,
                   frozen_layers: int | None, fit_kwargs: Mapping) -> None:
    """Fine-tune ``model`` (its lower part frozen if asked) and save it with a record of the training into ``path``."""
    import time
    from .corpus import staged, write_manifest
    from .runtime import peak_memory_mb
    from .strategies import freeze
    from .train import fit
    trainable = freeze(model, layers=frozen_layers) if frozen_layers is not None else sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    started = time.perf_counter()
    fit(model, train_set, tokenizer=tokenizer, seed=seed, **fit_kwargs)
    record = {"seconds": time.perf_counter() - started, "parameters": sum(p.numel() for p in model.parameters()),
              "trainable_parameters": trainable, "frozen_layers": frozen_layers,
              "process_peak_mb": peak_memory_mb()}   # the training process's peak so far, the training included
    with staged(path) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / TEACHER_RECORD).write_text(json.dumps(record, indent=1))
        write_manifest(staging, [p.name for p in staging.iterdir() if p.is_file()])


def teacher_training(path: str | Path) -> dict | None:
    """How the cached teacher in ``path`` was trained (seconds, trained weights, peak MB), or None if not recorded."""
    record = Path(path) / TEACHER_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


# ---------------------------------------------------------------------------------------------
# Transfer sets for scarce data (Tang et al., 2019): masking, n-gram sampling, teacher labels
# ---------------------------------------------------------------------------------------------
def mask_words(text: str, rng: random.Random, p: float = 0.1, mask: str = "[MASK]") -> str:
    """Replace each word with ``mask`` with probability ``p``: a nearby sentence the teacher can label."""
    return " ".join(mask if rng.random() < p else w for w in text.split())


def ngram_sample(text: str, rng: random.Random, min_n: int = 1, max_n: int = 5) -> str:
    """A random contiguous run of 1..5 words: short fragments whose sentiment the teacher still knows."""
    words = text.split()
    n = min(len(words), rng.randint(min_n, max_n))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start:start + n])


def augment(ds: Dataset, copies: int = 2, p_mask: float = 0.1, p_ngram: float = 0.25,
            seed: int = 0, mask: str = "[MASK]", keep_labels: bool = False) -> Dataset:
    """``copies`` perturbed variants per sentence (masked words, sometimes an n-gram), text only.

    The result has no labels: label it with the teacher (``label_with_teacher``) to make a transfer set.
    ``keep_labels=True`` instead gives each variant its sentence's label (augmenting scarce labels directly).
    """
    if keep_labels and "label" not in ds.column_names:
        raise ValueError("keep_labels=True needs a 'label' column")
    rng = random.Random(seed)
    rows = {"text": [], "domain": [], "label": []}
    sources = list(ds["domain"]) if "domain" in ds.column_names else ["augmented"] * len(ds)
    labels = list(ds["label"]) if keep_labels else [None] * len(ds)
    for text, domain, label in zip(ds["text"], sources, labels):
        for _ in range(copies):
            variant = mask_words(text, rng, p_mask, mask)
            if rng.random() < p_ngram:
                variant = ngram_sample(variant, rng)
            if variant.strip() and variant != text:
                rows["text"].append(variant)
                rows["domain"].append(domain)
                rows["label"].append(label)
    if not keep_labels:
        del rows["label"]
    return Dataset.from_dict(rows)


def label_with_teacher(teacher: nn.Module, ds: Dataset, tokenizer, cache_dir: str | Path | None = None,
                       max_length: int = 128) -> Dataset:
    """Add cached ``teacher_logits`` and the teacher's argmax as ``label`` (for unlabeled text)."""
    ds = cache_teacher_logits(teacher, ds, tokenizer, cache_dir, max_length=max_length)
    labels = np.asarray(ds[TEACHER_LOGITS]).argmax(-1).tolist()
    with quiet_datasets():
        if "label" in ds.column_names:
            ds = ds.remove_columns("label")
        return ds.add_column("label", labels)
