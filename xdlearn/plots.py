"""Figures: loss curves (live in a notebook, static elsewhere), transfer matrices, budget curves,
embeddings coloured by domain. Every function returns the matplotlib Figure, so it can be saved.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt  # headless, matplotlib falls back to Agg and draws to files
import numpy as np
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from . import stats


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray:
    """Moving average, so a noisy per-step loss shows its trend."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or window <= 1:
        return values
    window = min(window, len(values))
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


LOSS_COLOUR = "tab:blue"
METRIC_COLOURS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")  # never the loss's blue


def plot_history(history, ax=None, metrics: Sequence[str] | None = None, title: str | None = None,
                 window: int = 10):
    """Per-step loss (blue, raw and smoothed) and per-epoch metrics (other colours, right axis).

    One legend for both axes sits under the plot, so it names every line and covers none of them.
    """
    fig, ax = _figure(ax, (6.5, 4.0))
    handles = _draw_loss(ax, history.losses(), window)
    names = metrics or [k for k in (history.epochs[0] if history.epochs else {}) if k.endswith("/accuracy")]
    if names and history.epochs:
        handles += _draw_metrics(ax.twinx(), history, names)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers: no 1.5, 2.5 ticks
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(handles)),
              fontsize=8, frameon=False)
    ax.set_title(title or "training")
    fig.tight_layout()
    return fig


def _draw_loss(ax, losses: Sequence[float], window: int) -> list:
    """The faint raw loss of every step and its moving average, both labelled; returns their lines."""
    steps = np.arange(1, len(losses) + 1)
    raw, = ax.plot(steps, losses, color=LOSS_COLOUR, alpha=0.3, lw=1, label="loss per step")
    shown = min(window, len(losses))
    smoothed, = ax.plot(steps, smooth(losses, window), color=LOSS_COLOUR, lw=2,
                        label=f"loss, moving average of {shown} steps" if shown > 1 else "loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss", color=LOSS_COLOUR)
    ax.tick_params(axis="y", colors=LOSS_COLOUR)
    return [raw, smoothed]


def _draw_metrics(twin, history, names: Sequence[str]) -> list:
    """Each per-epoch metric at the step its epoch ended, in its own non-blue colour; returns the lines."""
    ends, lines = _epoch_end_steps(history), []
    for name, colour in zip(names, itertools.cycle(METRIC_COLOURS)):
        points = [(end, row[name]) for end, row in zip(ends, history.epochs) if name in row]
        if not points:
            continue
        line, = twin.plot(*zip(*points), "o-", color=colour, label=f"{name} (right axis)")
        lines.append(line)
    everything = [v for name in names for v in history.metric(name)]
    if everything and all(0 <= v <= 1 for v in everything):
        twin.set_ylim(0, 1)
    twin.set_ylabel("accuracy" if all(n.endswith("accuracy") for n in names) else "metric")
    return lines


def _epoch_end_steps(history) -> list[int]:
    """The step number at which each logged epoch ended."""
    ends = {}
    for row in history.steps:
        ends[row["epoch"]] = row["step"]
    return [ends.get(row["epoch"], 0) for row in history.epochs]


class LiveLossPlot:
    """A ``fit(monitor=...)`` that redraws the loss curve in place while a notebook trains.

    Outside Jupyter (scripts, CI) it draws nothing until ``figure()`` is asked for; in a notebook it
    updates one display every ``every`` steps, so the page shows a single, final plot afterwards.
    """

    def __init__(self, every: int = 10, title: str = "training", metrics: Sequence[str] | None = None):
        self.every, self.title, self.metrics = every, title, metrics
        self.history, self._handle = None, None

    def _draw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)

    def on_step(self, history) -> None:
        """Called by ``fit`` after every optimiser step."""
        self.history = history
        if len(history.steps) % self.every == 0:
            self._draw()

    def on_epoch(self, history) -> None:
        """Called by ``fit`` after every epoch's evaluation."""
        self.history = history
        self._draw()

    def figure(self):
        """The current plot as a Figure (for saving, or for scripts)."""
        return plot_history(self.history, metrics=self.metrics, title=self.title)


def plot_transfer_matrix(frame, ax=None, title: str = "accuracy: trained on (row), tested on (column)",
                         fmt: str = "{:.2f}"):
    """Heatmap of a transfer matrix (rows: source domain, columns: target domain)."""
    fig, ax = _figure(ax, (5.2, 4.2))
    values = frame.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values) - 0.05, vmax=np.nanmax(values))
    ax.set_xticks(range(values.shape[1]), frame.columns, rotation=30, ha="right")
    ax.set_yticks(range(values.shape[0]), frame.index)
    ax.set_xlabel(frame.columns.name or "tested on")
    ax.set_ylabel(frame.index.name or "trained on")
    threshold = (np.nanmin(values) + np.nanmax(values)) / 2
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center",
                color="black" if v > threshold else "white", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _spread(values: Sequence) -> tuple[list[float], list[float] | None]:
    """Scores, or lists of per-seed scores -> (means, standard deviations for error bars, or None for plain scores)."""
    means, sds = [], []
    for value in values:
        if np.ndim(value) == 0:
            means.append(float(value)), sds.append(None)
        elif len(value) == 0:
            raise ValueError("an empty list of scores cannot be plotted")
        else:
            mean, sd = stats.mean_sd(value)
            means.append(mean), sds.append(sd if len(value) > 1 else None)
    return means, ([sd or 0.0 for sd in sds] if any(sd is not None for sd in sds) else None)


def plot_bars(values: Mapping[str, float | Sequence[float]], ax=None, title: str = "", ylabel: str = "accuracy",
              reference: float | None = None, reference_label: str = "chance"):
    """Labelled bar chart of named scores; a list of per-seed scores draws its mean with a ±1 sd error bar."""
    names = list(values)
    if not names:
        raise ValueError("plot_bars() needs at least one named score")
    means, errors = _spread([values[n] for n in names])
    fig, ax = _figure(ax, (max(5.5, 0.75 * len(names)), 3.4))  # room for many bars
    bars = ax.bar(names, means, yerr=errors, capsize=4 if errors else 0,
                  color=plt.cm.tab10(np.arange(len(names)) % 10))
    spread = [np.ndim(values[n]) > 0 and len(values[n]) > 1 for n in names]
    labels = [f"{m:.3f}" + (f"\n±{e:.3f}" if s else "") for m, e, s in zip(means, errors or means, spread)]
    ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label)
        ax.legend(fontsize=8, loc="upper right")
    if all(0 <= m <= 1 for m in means):
        ax.set_ylim(0, 1.12 if errors else 1.05)  # scores and shares: the whole 0-1 scale, so bars compare honestly
    else:
        ax.margins(y=0.15)    # other quantities (speed-ups, seconds): room for the labels
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    long_labels = max(len(n) for n in names) > 14
    ax.tick_params(axis="x", labelrotation=30 if long_labels else 20)
    if long_labels:
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def plot_budget_curves(curves: Mapping[str, Mapping[int, float | Sequence[float]]], ax=None,
                       title: str = "target accuracy vs. number of target labels",
                       reference: float | None = None, reference_label: str = "source-only",
                       xlabel: str = "target labels"):
    """One line per method: score by label budget (log-2 axis, linear near 0 labels); per-seed lists: mean ± 1 sd."""
    fig, ax = _figure(ax, (6, 3.8))
    for name, points in curves.items():
        budgets = sorted(points)
        means, errors = _spread([points[b] for b in budgets])
        ax.errorbar(budgets, means, yerr=errors, fmt="o-", capsize=3, label=name)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label)
    budgets = sorted({b for points in curves.values() for b in points})
    if budgets[0] > 0:
        ax.set_xscale("log", base=2)
    else:   # no labels at all has no logarithm: linear up to the smallest budget, logarithmic beyond
        linear = min([b for b in budgets if b > 0], default=1)
        ax.set_xscale("symlog", base=2, linthresh=linear)
        ax.set_xlim(-linear / 4, max(budgets) * 1.3 if budgets[-1] > 0 else linear)   # no empty negative half
    ax.set_xticks(budgets)
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_decision_chart(picks: Mapping[str, Mapping[int, Mapping]], colours: Mapping[str, str], ax=None,
                        title: str = "which route to take", xlabel: str = "target labels"):
    """A grid to take away: one row per deployment, one column per label budget, each cell the route to take.

    ``picks[row][budget]`` holds ``route``, ``mean``, ``sd`` and ``ties`` (routes within noise of it, written under
    it); the cell takes the route's colour from ``colours``, paler when another route ties with it.
    """
    rows = list(picks)
    budgets = sorted({b for row in picks.values() for b in row})
    fig, ax = _figure(ax, (1.45 * len(budgets) + 2.2, 1.25 * len(rows) + 1.2))
    for i, row in enumerate(rows):
        for j, budget in enumerate(budgets):
            pick = picks[row].get(budget)
            if pick is None:
                continue
            ax.add_patch(plt.Rectangle((j - 0.48, i - 0.46), 0.96, 0.92, color=colours.get(pick["route"], "lightgrey"),
                                       alpha=0.35 if pick["ties"] else 0.75))
            tied = "".join(f"\n≈ {route}" for route in pick["ties"])
            ax.text(j, i, f"{pick['route']}\n{pick['mean']:.3f} ± {pick['sd']:.3f}{tied}", ha="center", va="center",
                    fontsize=8)
    ax.set_xlim(-0.5, len(budgets) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_embeddings(points: np.ndarray, groups: Sequence[str], ax=None, title: str = "",
                    max_points: int = 2000, seed: int = 0):
    """2-D points (e.g. PCA of sentence embeddings) coloured by group (e.g. domain)."""
    fig, ax = _figure(ax, (5.5, 4.5))
    groups = np.asarray(groups)
    keep = np.random.default_rng(seed).permutation(len(groups))[:max_points]
    for name in dict.fromkeys(groups):
        mask = groups[keep] == name
        ax.scatter(points[keep][mask, 0], points[keep][mask, 1], s=6, alpha=0.5, label=str(name))
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_tradeoff(frame, x: str = "speed-up", y: str = "accuracy", size: str | None = "megabytes", ax=None,
                  title: str = "students: accuracy vs. speed (marker area ~ size)", logx: bool = True):
    """Scatter of models (rows of ``frame``) with the Pareto front (no model both faster and better) drawn."""
    fig, ax = _figure(ax, (6.2, 4.0))
    xs, ys = frame[x].to_numpy(dtype=float), frame[y].to_numpy(dtype=float)
    areas = 20 + 300 * frame[size].to_numpy(dtype=float) / frame[size].max() if size else 60
    ax.scatter(xs, ys, s=areas, alpha=0.6, c=plt.cm.tab10(np.arange(len(frame)) % 10))
    for name, xv, yv in zip(frame.index, xs, ys):
        ax.annotate(str(name), (xv, yv), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front(xs, ys)
    ax.plot(xs[front], ys[front], "--", color="grey", lw=1, label="Pareto front")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of points no other point beats on both x and y (higher is better), sorted by x."""
    order = sorted(range(len(xs)), key=lambda i: (-xs[i], -ys[i]))
    front, best_y = [], -np.inf
    for i in order:
        if ys[i] > best_y:
            front.append(i)
            best_y = ys[i]
    return sorted(front, key=lambda i: xs[i])


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure (creating folders) and close it, returning the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure(ax, size):
    """Use the given axes, or make a new figure of ``size`` inches."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size)
    return fig, ax
