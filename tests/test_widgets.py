"""The live training board and live loss plot work headless as fit() monitors."""
from __future__ import annotations

import matplotlib.pyplot as plt

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
