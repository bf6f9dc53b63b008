"""Fine-tune, distil, or both: every route run on a tiny model, its work counted; the map, the picks, the costs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from xdlearn import choose, data, distill, plots, students
from conftest import make_tiny_model, toy_sentences

PLAN = choose.Plan(epochs_at={0: 1, 8: 3, 32: 1}, distil_epochs=1, batch_size=8, transfer_batch_size=8, max_length=32)
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def toy_target():
    """Labelled target sentences, unlabeled target text, and a test set."""
    return {"train": toy_sentences(64, seed=3, domain="target"), "transfer": data.unlabeled(toy_sentences(24, seed=4)),
            "test": toy_sentences(20, seed=5, domain="target")}


def test_the_plan_gives_each_budget_the_epochs_of_the_nearest_smaller_one():
    assert [PLAN.epochs(b) for b in (0, 8, 16, 32, 1000)] == [1, 3, 3, 1, 1]
    with pytest.raises(ValueError, match="no epochs planned for 4 labels"):
        choose.Plan(epochs_at={8: 2}).epochs(4)
    small = choose.Plan(epochs_at={0: 1}, distil_epochs=2, min_distil_sentences=100)
    assert [small.distil_epochs_for(n) for n in (10, 30, 50, 1000)] == [10, 4, 2, 2]


def test_with_no_labels_the_source_model_teaches_every_seed(tiny_dir, toy_target):
    runs = choose.run_budget(tiny_dir, {seed: None for seed in SEEDS}, toy_target["transfer"], toy_target["test"], PLAN)
    assert set(runs) == {choose.FINE_TUNE, choose.DISTIL}   # nothing to fine-tune a student on
    tuned = runs[choose.FINE_TUNE]
    assert len({run.accuracy for run in tuned}) == 1 and all(np.array_equal(r.logits, tuned[0].logits) for r in tuned)
    assert tuned[0].sentences == {choose.TEACHER_TRAINING: 0} and tuned[0].seconds == {choose.TEACHER_TRAINING: 0.0}
    n = len(toy_target["transfer"])
    for run in runs[choose.DISTIL]:
        assert run.sentences == {choose.TEACHER_TRAINING: 0, choose.LABELLING: n, choose.DISTILLATION: n}
        assert run.logits.shape == (len(toy_target["test"]), 2) and 0 <= run.accuracy <= 1
    labelling = {run.seconds[choose.LABELLING] for run in runs[choose.DISTIL]}
    assert len(labelling) == 1, "the one teacher labels the transfer set once, and every seed's route counts it"
    drawn = [run.logits for run in runs[choose.DISTIL]]
    assert not np.allclose(drawn[0], drawn[1]), "the seeds should draw different students"


def test_with_labels_every_route_runs_and_counts_its_sentences(tiny_dir, toy_target):
    budget = 8
    labels = {seed: data.sample_labels(toy_target["train"], budget, seed=seed) for seed in SEEDS}
    runs = choose.run_budget(tiny_dir, labels, toy_target["transfer"], toy_target["test"], PLAN)
    assert set(runs) == set(choose.ROUTES) and all(len(r) == len(SEEDS) for r in runs.values())
    taught, n = budget * PLAN.epochs(budget), len(toy_target["transfer"])
    for tuned, distilled, both, alone in zip(*(runs[route] for route in choose.ROUTES)):
        assert tuned.sentences == {choose.TEACHER_TRAINING: taught}
        assert distilled.sentences == {choose.TEACHER_TRAINING: taught, choose.LABELLING: n, choose.DISTILLATION: n}
        assert both.sentences == {**distilled.sentences, choose.STUDENT_TRAINING: taught}
        assert alone.sentences == {choose.STUDENT_TRAINING: taught}
        assert distilled.seconds[choose.TEACHER_TRAINING] == tuned.seconds[choose.TEACHER_TRAINING] > 0
        assert list(both.seconds) == list(choose.STAGES) and both.total_seconds() > distilled.total_seconds()
        assert not np.allclose(both.logits, distilled.logits), "'both' should fine-tune the distilled student further"
    for route, seeds in runs.items():
        assert all(list(run.sentences) == list(choose.ROUTE_STAGES[route]) for run in seeds), route
    teachers = [run.logits for run in runs[choose.FINE_TUNE]]
    assert not np.allclose(teachers[0], teachers[1]), "each seed fine-tunes its own teacher"


def run(accuracy: float, **sentences: int) -> choose.Run:
    """A made-up run: only its accuracy and counted sentences matter to the tables."""
    return choose.Run(accuracy, np.zeros((1, 2)), {stage: 1.0 for stage in sentences}, sentences)


MADE_UP = {0: {choose.FINE_TUNE: [run(0.7, a=0)] * 3, choose.DISTIL: [run(0.6, a=1), run(0.62, a=1), run(0.61, a=1)]},
           16: {choose.FINE_TUNE: [run(0.80, a=2), run(0.81, a=2), run(0.79, a=2)],
                choose.DISTIL: [run(0.70, a=3), run(0.71, a=3), run(0.69, a=3)],
                choose.BOTH: [run(0.69, a=4), run(0.72, a=4), run(0.70, a=4)],
                choose.LABELS_ONLY: [run(0.5, a=1), run(0.52, a=1), run(0.51, a=1)]}}


def test_the_map_reports_mean_and_sd_and_the_pick_names_the_routes_within_noise():
    table = choose.decision_map(MADE_UP)
    assert table.loc[16, choose.FINE_TUNE] == "0.800 ± 0.010 (n=3)" and table.loc[0, choose.BOTH] == ""
    assert choose.accuracies(MADE_UP)[choose.DISTIL] == {0: [0.6, 0.62, 0.61], 16: [0.70, 0.71, 0.69]}
    teacher = choose.recommend(MADE_UP, 16, choose.TEACHER_SPEED)
    assert teacher["route"] == choose.FINE_TUNE and teacher["ties"] == [] and teacher["mean"] == pytest.approx(0.8)
    student = choose.recommend(MADE_UP, 16, choose.STUDENT_SPEED)   # both 0.703 vs distil 0.700: within noise
    assert student["route"] == choose.BOTH and student["ties"] == [choose.DISTIL]
    assert choose.recommend(MADE_UP, 0, choose.STUDENT_SPEED)["route"] == choose.DISTIL
    picks = choose.decision_table(MADE_UP)
    assert picks.loc[choose.STUDENT_SPEED, 16] == "both ≈ distil (0.703)"
    assert picks.loc[choose.TEACHER_SPEED, 0] == "fine-tune (0.700)"
    assert choose.where_ahead(MADE_UP, choose.DISTIL, choose.BOTH) == {"distil ahead": [], "both ahead": [],
                                                                      "within noise": [16]}
    assert choose.where_ahead(MADE_UP, choose.DISTIL, choose.FINE_TUNE)["fine-tune ahead"] == [0, 16]
    with pytest.raises(ValueError, match="deployment must be one of"):
        choose.recommend(MADE_UP, 16, "any speed")


def test_costs_are_counted_sentences_times_each_stage_s_flops_per_sentence():
    costs = choose.route_costs(MADE_UP, {"a": 10.0})
    assert costs.loc[(16, choose.BOTH), "FLOPs"] == 40.0 and costs.loc[(0, choose.FINE_TUNE), "FLOPs"] == 0.0
    assert costs.loc[(16, choose.BOTH), "seconds"] == 1.0
    assert choose.payback(1000.0, teacher_flops=30.0, student_flops=10.0) == 50.0
    with pytest.raises(ValueError, match="never pays back"):
        choose.payback(1000.0, teacher_flops=10.0, student_flops=10.0)


def test_inherited_errors_split_the_student_s_errors_by_the_teacher_s():
    labels = [0, 0, 1, 1, 1, 0]
    teacher = np.eye(2)[[0, 0, 1, 1, 0, 1]]    # wrong on the last two
    student = np.eye(2)[[0, 1, 1, 1, 0, 0]]    # wrong on one the teacher gets right, and one it gets wrong
    split = choose.inherited_errors(teacher, student, labels)
    assert split == {"where the teacher is wrong": 0.5, "where the teacher is right": 0.25}
    with pytest.raises(ValueError, match="nothing to split"):
        choose.inherited_errors(np.eye(2)[labels], student, labels)


def test_the_transfer_curve_draws_each_seed_its_own_subsets(toy_target, tokenizer):
    teacher = make_tiny_model(seed=3)
    curve = choose.transfer_curve(teacher, tokenizer, toy_target["transfer"], [4, 16], SEEDS, toy_target["test"], PLAN)
    assert list(curve) == [4, 16] and all(len(scores) == len(SEEDS) for scores in curve.values())
    assert all(0 <= score <= 1 for scores in curve.values() for score in scores)


def test_stage_flops_price_training_above_labelling_and_the_student_below_the_teacher(toy_target, tokenizer):
    teacher = make_tiny_model(seed=3)
    student = students.make_student(teacher, tokenizer, "cnn", seed=0)
    cost = choose.stage_flops(teacher, student, tokenizer, toy_target["test"], PLAN)
    assert list(cost) == list(choose.STAGES)
    assert 2 * cost[choose.LABELLING] < cost[choose.TEACHER_TRAINING] < 4 * cost[choose.LABELLING]  # forward + backward
    # cached logits: distillation runs no teacher, so it costs what training the student on labels costs
    assert cost[choose.DISTILLATION] == pytest.approx(cost[choose.STUDENT_TRAINING], rel=0.05)


def test_a_seeded_student_depends_on_its_seed_alone_and_leaves_the_global_state(tokenizer):
    teacher = make_tiny_model()
    first = students.make_student(teacher, tokenizer, "cnn", seed=4)
    state = torch.get_rng_state()
    again = students.make_student(teacher, tokenizer, "cnn", seed=4)
    assert torch.equal(state, torch.get_rng_state()), "a seeded student must not move the global generator"
    other = students.make_student(teacher, tokenizer, "cnn", seed=5)
    weights = [m.convs[0].weight.detach().numpy() for m in (first, again, other)]
    assert np.array_equal(weights[0], weights[1]) and not np.array_equal(weights[0], weights[2])


def test_a_plan_with_frozen_embeddings_freezes_them_in_teachers_and_students_alike(tokenizer):
    frozen = choose.Plan(epochs_at={0: 1}, frozen_embeddings=True)
    teacher = frozen.prepare(make_tiny_model())
    student = choose.plan_student(teacher, tokenizer, 0, frozen)
    assert not teacher.get_input_embeddings().weight.requires_grad and not student.embed.weight.requires_grad
    assert all(p.requires_grad for name, p in teacher.named_parameters() if "word_embeddings" not in name)
    assert choose.Plan(epochs_at={0: 1}).prepare(make_tiny_model()).get_input_embeddings().weight.requires_grad


def test_with_teacher_logits_adds_or_replaces_the_column_and_refuses_a_wrong_length():
    ds = data.unlabeled(toy_sentences(3))
    once = distill.with_teacher_logits(ds, np.ones((3, 2)))
    twice = distill.with_teacher_logits(once, np.zeros((3, 2)))
    assert twice[distill.TEACHER_LOGITS] == [[0.0, 0.0]] * 3 and twice.column_names.count(distill.TEACHER_LOGITS) == 1
    with pytest.raises(ValueError, match="2 rows of teacher logits for 3 sentences"):
        distill.with_teacher_logits(ds, np.ones((2, 2)))


def test_the_decision_chart_writes_each_pick_and_its_ties_in_its_cell():
    fig = plots.plot_decision_chart(choose.recommendations(MADE_UP), choose.ROUTE_COLOURS)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "both\n0.703 ± 0.015\n≈ distil" in texts and "fine-tune\n0.700 ± 0.000" in texts
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "16"]
    plt.close(fig)


def test_budget_curves_place_a_zero_budget_on_the_axis():
    fig = plots.plot_budget_curves({"x": {0: [0.5, 0.6, 0.7], 16: [0.8] * 3, 64: [0.9] * 3}}, xlabel="sentences")
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog" and list(ax.lines[0].get_xdata()) == [0, 16, 64]
    assert ax.get_xlim()[0] < 0 < 16 < 64 < ax.get_xlim()[1] and ax.get_xlabel() == "sentences"
    plt.close(fig)


def test_distil_each_gives_every_transfer_set_the_same_student_and_schedule(toy_target, tokenizer):
    teacher = make_tiny_model(seed=3)
    labelled, _ = choose.label(teacher, tokenizer, toy_target["transfer"], PLAN)
    scores = choose.distil_each(teacher, tokenizer, {"a": labelled, "again": labelled}, 0, toy_target["test"], PLAN)
    assert list(scores) == ["a", "again"] and all(0 <= s <= 1 for s in scores.values())
    assert scores["a"] == scores["again"], "the same set from the same seed must give the same student"
    student, _, _ = choose.distil(teacher, tokenizer, labelled, 0, PLAN)
    assert scores["a"] == choose.score(student, tokenizer, toy_target["test"], PLAN)[0]


def test_train_alone_trains_the_plan_s_student_on_the_labels_for_the_plan_s_epochs(toy_target, tokenizer):
    teacher, labels = make_tiny_model(seed=3), data.sample_labels(toy_target["train"], 8, seed=0)
    fresh = choose.plan_student(teacher, tokenizer, 0, PLAN)
    alone, seconds = choose.train_alone(teacher, tokenizer, labels, 0, PLAN)
    assert seconds > 0 and type(alone) is type(fresh)
    moved = [not torch.equal(a, b) for a, b in zip(alone.state_dict().values(), fresh.state_dict().values())]
    assert any(moved), "training on the labels should change the student's weights"
    again, _ = choose.train_alone(teacher, tokenizer, labels, 0, PLAN, epochs=1)
    assert not all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), again.state_dict().values()))
