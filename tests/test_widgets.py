"""The widgets and training plots, driven headless: their state after simulated events, their figures' lines."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import make_tiny_model, toy_sentences
from xdlearn import plots, train, widgets


def test_training_board_follows_fit(tiny_model, tokenizer, toy):
    board = widgets.TrainingBoard(total_steps=16, every=4)
    train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=2, batch_size=32, progress=False,
              eval_data=toy["test"], monitor=board)
    assert board.progress.value == 16
    assert "step 16" in board.status.value
    assert board.epochs.value.count("<tr>") == 3  # header + one row per epoch
    assert "validation/accuracy" in board.epochs.value


def test_live_loss_plot_draws_the_history(tiny_model, tokenizer, toy):
    live = plots.LiveLossPlot(every=5)
    history = train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, progress=False,
                        eval_data=toy["test"], monitor=live)
    fig = live.figure()
    lines = fig.axes[0].get_lines()
    assert len(lines[0].get_ydata()) == len(history.steps)
    assert fig.axes[1].get_lines()[0].get_ydata()[0] == history.last["validation/accuracy"]
    plt.close(fig)


def test_lesson_check_asserts_at_teaching_size_and_reports_at_smoke_size(monkeypatch):
    import pytest
    from xdlearn import lesson
    monkeypatch.delenv("XDLEARN_QUICK", raising=False)
    assert lesson.check(True, "x beats y") == "checked: x beats y"
    with pytest.raises(AssertionError, match="claim no longer holds: x beats y"):
        lesson.check(False, "x beats y")
    monkeypatch.setenv("XDLEARN_QUICK", "1")
    assert "does NOT hold" in lesson.check(False, "x beats y")
    assert lesson.pick(100, 10) == 10


def test_pareto_front_and_tradeoff_plot():
    import pandas as pd
    from xdlearn import plots
    xs, ys = [1.0, 2.0, 3.0, 2.5, 10.0], [0.9, 0.85, 0.7, 0.6, 0.65]
    assert plots.pareto_front(xs, ys) == [0, 1, 2, 4]  # (2.5, 0.6) is beaten by (3.0, 0.7)
    frame = pd.DataFrame({"speed-up": xs, "accuracy": ys, "megabytes": [90, 60, 40, 50, 45]},
                         index=list("abcde"))
    fig = plots.plot_tradeoff(frame)
    assert [t.get_text() for t in fig.axes[0].texts] == list("abcde")
    plt.close(fig)


def test_plot_bars_scales_to_its_values_and_labels_every_bar():
    import matplotlib.pyplot as plt
    scores = plots.plot_bars({"a": 0.6, "b": 0.9}, reference=0.5)
    assert scores.axes[0].get_ylim() == (0, 1.05)  # scores keep the honest 0-1 scale
    speedups = plots.plot_bars({"2-layer": 2.9, "CNN": 17.4}, ylabel="speed-up")
    assert speedups.axes[0].get_ylim()[1] > 17.4  # other quantities are not clipped at 1
    many = plots.plot_bars({f"a long strategy name {i}": 0.5 for i in range(10)})
    assert len(many.axes[0].patches) == 10 and many.get_size_inches()[0] >= 7.5
    for fig in (scores, speedups, many):
        plt.close(fig)


def test_per_seed_scores_are_drawn_as_mean_with_a_standard_deviation_bar():
    import matplotlib.pyplot as plt
    fig = plots.plot_bars({"a": [0.6, 0.7, 0.8], "b": 0.9})
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.7, 0.9]
    labels = [t.get_text() for t in ax.texts]
    assert labels[0] == "0.700\n±0.100" and labels[1] == "0.900"
    segments = [c for c in ax.collections if len(c.get_segments())]   # the error bars
    (low, high) = segments[0].get_segments()[0][:, 1]
    assert (round(low, 6), round(high, 6)) == (0.6, 0.8)
    curve = plots.plot_budget_curves({"x": {16: [0.5, 0.7, 0.6], 64: [0.8, 0.8, 0.8]}})
    line = curve.axes[0].lines[0]
    assert list(line.get_xdata()) == [16, 64] and [round(y, 6) for y in line.get_ydata()] == [0.6, 0.8]
    for f in (fig, curve):
        plt.close(f)


def _history_with_metrics(steps: int = 24, epochs: int = 3) -> train.History:
    """A made-up History: a falling loss every step, two accuracies at the end of each epoch."""
    per_epoch = steps // epochs
    rows = [{"step": s, "epoch": (s - 1) // per_epoch + 1, "loss": 0.7 / s, "lr": 1e-4} for s in range(1, steps + 1)]
    ends = [{"epoch": e, "validation/accuracy": 0.5 + 0.1 * e, "tweets/accuracy": 0.4 + 0.1 * e}
            for e in range(1, epochs + 1)]
    return train.History(steps=rows, epochs=ends)


def test_loss_and_metrics_have_their_own_colours_and_a_legend_naming_every_line():
    from matplotlib.colors import to_hex
    history = _history_with_metrics()
    fig = plots.plot_history(history, window=5)
    ax, twin = fig.axes
    raw, smoothed = ax.get_lines()
    metric_lines = twin.get_lines()
    assert list(raw.get_ydata()) == history.losses()
    assert [list(line.get_xdata()) for line in metric_lines] == [[8, 16, 24]] * 2  # at each epoch's last step
    assert list(metric_lines[0].get_ydata()) == history.metric("validation/accuracy")
    loss_colour = to_hex(raw.get_color())
    assert to_hex(smoothed.get_color()) == loss_colour
    metric_colours = {to_hex(line.get_color()) for line in metric_lines}
    assert len(metric_colours) == 2 and loss_colour not in metric_colours
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["loss per step", "loss, moving average of 5 steps",
                      "validation/accuracy (right axis)", "tweets/accuracy (right axis)"]
    assert twin.get_legend() is None  # one legend for both axes, not one hiding the other
    plt.close(fig)


def test_the_legend_sits_under_the_axes_and_step_ticks_are_whole_numbers():
    fig = plots.plot_history(_history_with_metrics(steps=6, epochs=2))  # few steps: the locator would pick 0.5s
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= axes_box.y0  # below the plotting area: it covers no line
    assert legend.y0 >= 0  # and still inside the figure
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_a_loss_only_history_still_labels_both_loss_lines():
    history = train.History(steps=[{"step": s, "epoch": 1, "loss": 1.0 / s, "lr": 1e-4} for s in range(1, 4)])
    fig = plots.plot_history(history)
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "loss per step", "loss, moving average of 3 steps"]
    plt.close(fig)


def test_shorten_cuts_at_a_word_boundary_with_an_ellipsis():
    text = "the acting was wonderful although the plot meandered for far too long in the middle act"
    short = widgets.shorten(text, width=40)
    assert short.endswith("…") and len(short) <= 40
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " "  # the cut falls between two words
    assert widgets.shorten("short and sweet", width=40) == "short and sweet"
    assert widgets.shorten("a" * 60, width=20) == "a" * 19 + "…"  # one endless word: cut, but still marked


def _teacher_and_flipped_student():
    """A tiny teacher and a student with the classifier negated: they disagree on every sentence."""
    import copy

    import torch
    teacher = make_tiny_model(seed=1)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.classifier.weight.neg_()
        student.classifier.bias.neg_()
    return teacher, student


def test_comparison_deselects_the_example_when_a_sentence_is_typed_and_states_both_predictions(tokenizer):
    teacher, student = _teacher_and_flipped_student()
    board = widgets.TeacherStudentComparison(teacher, student, tokenizer, toy_sentences(12))
    assert board.picker.value == 0 and board.shown["source"] == "example"
    board.typed.value = "what a <b>good</b> film"  # as if typed and submitted
    assert board.picker.value is None and board.picker.index is None  # no stale example in the dropdown
    assert board.shown["source"] == "typed" and board.shown["text"] == "what a <b>good</b> film"
    assert "what a &lt;b&gt;good&lt;/b&gt; film" in board.view.value  # shown as text, not as markup
    expected = board.compare("what a <b>good</b> film")
    assert list(board.shown["teacher"]) == list(expected["teacher"].values())
    t_class = max(expected["teacher"], key=expected["teacher"].get)
    s_class = max(expected["student"], key=expected["student"].get)
    assert t_class != s_class and not board.shown["agree"]
    assert f"teacher predicts <b>{t_class}</b>" in board.view.value
    assert f"student predicts <b>{s_class}</b>" in board.view.value and "they disagree" in board.view.value
    board.picker.value = 3  # picking an example again empties the box of the sentence no longer shown
    assert board.typed.value == "" and board.shown["source"] == "example"
    assert board.shown["text"] == toy_sentences(12)[3]["text"]


def test_comparison_with_no_disagreements_says_so_and_unticking_selects_the_first_example(tokenizer):
    same = make_tiny_model(seed=1)
    board = widgets.TeacherStudentComparison(same, same, tokenizer, toy_sentences(12))
    assert "they agree" in board.view.value
    board.picker.value = 5
    board.only_disagree.value = True
    assert board.picker.options == () and board.picker.value is None
    assert board.shown == {"message": board.shown["message"]}
    assert "no disagreements among 12 examples" in board.view.value
    assert toy_sentences(12)[5]["text"] not in board.view.value  # the old sentence is gone
    board.only_disagree.value = False
    assert len(board.picker.options) == 12 and board.picker.value == 0
    assert board.shown["text"] == toy_sentences(12)[0]["text"]


def test_comparison_only_disagreements_selects_the_first_one(tokenizer):
    teacher, student = _teacher_and_flipped_student()
    board = widgets.TeacherStudentComparison(teacher, student, tokenizer, toy_sentences(12))
    board.picker.value = 7
    board.only_disagree.value = True
    assert [value for _, value in board.picker.options] == board.disagreements() == list(range(12))
    assert board.picker.value == 0 and board.shown["text"] == toy_sentences(12)[0]["text"]
    assert "they disagree" in board.view.value


def test_temperature_explorer_opens_on_the_surest_example_and_labels_every_bar():
    logits = np.array([[0.2, 0.0], [-3.0, 1.0], [1.0, 0.0]])
    explorer = widgets.TemperatureExplorer(logits, ["unsure", "sure", "middling"], ["neg", "pos"])
    assert explorer.picker.value == 1 and explorer.margin(1) == pytest.approx(4.0)
    assert explorer.note.value == ""  # the surest example is confident: no warning
    fig = explorer.figure(2.0, 1)
    expected = explorer.distribution(2.0, 1)
    assert [t.get_text() for t in fig.axes[0].texts] == [f"{v:.3f}" for v in expected]
    plt.close(fig)
    before = explorer.readout.value
    assert f"entropy {explorer.entropy(1.0, 1):.4f} bits" in before
    explorer.slider.value = 4.0
    assert explorer.readout.value != before and f"entropy {explorer.entropy(4.0, 1):.4f} bits" in explorer.readout.value


def test_temperature_explorer_warns_when_the_teacher_is_unsure_of_everything():
    explorer = widgets.TemperatureExplorer(np.array([[0.1, 0.0], [0.0, 0.3]]), ["a", "b"], ["neg", "pos"])
    assert explorer.picker.value == 1
    assert "unsure of every one" in explorer.note.value and "logit margin 0.30" in explorer.note.value
    with pytest.raises(ValueError, match="do not match 3 texts"):
        widgets.TemperatureExplorer(np.zeros((2, 2)), ["a", "b", "c"], ["neg", "pos"])
