"""Interactive pieces for JupyterLab: a live training board (more widgets come with distillation).

Widgets also work headless (nbval, the book build): they are created, updated and displayed as
usual; without a browser only their text form is shown.
"""
from __future__ import annotations

import ipywidgets as W


class TrainingBoard:
    """A ``fit(monitor=...)`` showing progress, the latest loss and learning rate, and a live loss plot."""

    def __init__(self, total_steps: int | None = None, title: str = "training", every: int = 10):
        from .plots import LiveLossPlot
        self.every = every
        self.progress = W.IntProgress(value=0, min=0, max=total_steps or 1, description="steps",
                                      layout=W.Layout(width="60%"))
        self.status = W.HTML(f"<b>{title}</b>: waiting for the first step")
        self.epochs = W.HTML("")
        self.plot = W.Output()
        self._live = LiveLossPlot(every=every, title=title)
        self.widget = W.VBox([self.status, self.progress, self.epochs, self.plot])

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)

    def on_step(self, history) -> None:
        """Update counters every step and the plot every ``every`` steps."""
        row = history.steps[-1]
        self.progress.value = min(row["step"], self.progress.max)
        self.status.value = (f"<b>epoch {row['epoch']}</b> · step {row['step']} · loss {row['loss']:.4f}"
                             f" · lr {row['lr']:.2e}")
        self._live.history = history
        if row["step"] % self.every == 0:
            self._redraw()

    def on_epoch(self, history) -> None:
        """Add the finished epoch's metrics as a table row and redraw."""
        rows = "".join("<tr>" + "".join(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{v}</td>"
                                        for v in row.values()) + "</tr>" for row in history.epochs)
        head = "".join(f"<th>{k}</th>" for k in history.epochs[-1])
        self.epochs.value = f"<table><tr>{head}</tr>{rows}</table>"
        self._live.history = history
        self._redraw()

    def _redraw(self) -> None:
        import matplotlib.pyplot as plt
        fig = self._live.figure()
        self.plot.clear_output(wait=True)
        with self.plot:
            from IPython.display import display
            display(fig)
        plt.close(fig)
