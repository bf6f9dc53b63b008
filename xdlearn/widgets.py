"""Interactive pieces for JupyterLab: a live training board, teacher vs student, a temperature explorer.

Widgets also work headless (nbval, the book build): they are created, updated and displayed as
usual; without a browser only their text form is shown.
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np


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


def _bars_html(probs, names, color: str) -> str:
    """Class probabilities as small horizontal HTML bars (renders anywhere, no plotting needed)."""
    rows = "".join(
        f"<div style='display:flex;align-items:center;gap:6px'><span style='width:70px'>{n}</span>"
        f"<span style='display:inline-block;width:{int(160 * p)}px;height:10px;background:{color}'></span>"
        f"<span>{p:.3f}</span></div>" for n, p in zip(names, probs))
    return f"<div>{rows}</div>"


class TeacherStudentComparison:
    """Teacher and student side by side: pick an example or type a sentence, browse disagreements.

    Works headless too: ``compare(text)``, ``disagreements()`` and ``summary`` give the same facts.
    """

    def __init__(self, teacher, student, tokenizer, examples, student_tokenizer=None, max_length: int = 128):
        from .infer import predict
        from .metrics import softmax
        self.teacher, self.student = teacher, student
        self.tokenizer, self.student_tokenizer = tokenizer, student_tokenizer or tokenizer
        self.examples, self.max_length = examples, max_length
        self.names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        self.p_teacher = softmax(predict(teacher, examples, tokenizer, max_length=max_length))
        self.p_student = softmax(predict(student, examples, self.student_tokenizer, max_length=max_length))
        agree = self.p_teacher.argmax(-1) == self.p_student.argmax(-1)
        self.summary = {"agreement": float(agree.mean()), "examples": len(examples),
                        "teacher_confidence": float(self.p_teacher.max(-1).mean()),
                        "student_confidence": float(self.p_student.max(-1).mean())}
        if "label" in examples.column_names:
            labels = np.asarray(examples["label"])
            self.summary["teacher_accuracy"] = float((self.p_teacher.argmax(-1) == labels).mean())
            self.summary["student_accuracy"] = float((self.p_student.argmax(-1) == labels).mean())
        self._build()

    def disagreements(self) -> list[int]:
        """Indices of examples where teacher and student predict different classes."""
        return np.flatnonzero(self.p_teacher.argmax(-1) != self.p_student.argmax(-1)).tolist()

    def compare(self, text: str) -> dict:
        """Both models' class probabilities for any sentence."""
        from datasets import Dataset
        from .infer import predict
        from .metrics import softmax
        one = Dataset.from_dict({"text": [text]})
        t = softmax(predict(self.teacher, one, self.tokenizer, max_length=self.max_length))[0]
        s = softmax(predict(self.student, one, self.student_tokenizer, max_length=self.max_length))[0]
        return {"text": text, "teacher": dict(zip(self.names, t.tolist())),
                "student": dict(zip(self.names, s.tolist())), "agree": bool(t.argmax() == s.argmax())}

    def _build(self) -> None:
        self.only_disagree = W.Checkbox(description="only disagreements", value=False)
        self.picker = W.Dropdown(options=self._options(), description="example", layout=W.Layout(width="95%"))
        self.typed = W.Text(placeholder="or type a sentence and press Enter", continuous_update=False,
                            layout=W.Layout(width="95%"))
        self.view = W.HTML()
        head = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.summary.items())
        self.widget = W.VBox([W.HTML(f"<b>teacher vs student</b>: {head}"), self.only_disagree,
                              self.picker, self.typed, self.view])
        self.only_disagree.observe(lambda _: setattr(self.picker, "options", self._options()), "value")
        self.picker.observe(lambda change: self.show_index(change["new"]), "value")
        self.typed.observe(lambda change: self.show_text(change["new"]), "value")
        if self.picker.options:
            self.show_index(self.picker.options[0][1])

    def _options(self) -> list[tuple[str, int]]:
        indices = self.disagreements() if self.only_disagree.value else range(len(self.examples))
        return [(self.examples[int(i)]["text"][:90], int(i)) for i in list(indices)[:500]]

    def _render(self, text: str, teacher, student, truth: str | None) -> None:
        label = f"<br><i>true label: {truth}</i>" if truth is not None else ""
        self.view.value = (f"<p>{text}{label}</p><div style='display:flex;gap:40px'>"
                           f"<div><b>teacher</b>{_bars_html(teacher, self.names, '#1f77b4')}</div>"
                           f"<div><b>student</b>{_bars_html(student, self.names, '#ff7f0e')}</div></div>")

    def show_index(self, i: int | None) -> None:
        """Show example ``i`` of the comparison set."""
        if i is None:
            return
        row = self.examples[int(i)]
        truth = self.names[row["label"]] if "label" in row else None
        self._render(row["text"], self.p_teacher[i], self.p_student[i], truth)

    def show_text(self, text: str) -> None:
        """Show a typed sentence."""
        if text.strip():
            result = self.compare(text)
            self._render(text, list(result["teacher"].values()), list(result["student"].values()), None)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


class TemperatureExplorer:
    r"""A slider for :math:`T` showing the teacher's softened distribution :math:`\sigma(z/T)` and its entropy."""

    def __init__(self, logits, texts: list[str], names: list[str], temperatures=(0.5, 10.0)):
        self.logits, self.texts, self.names = np.asarray(logits, dtype=float), list(texts), list(names)
        self.slider = W.FloatSlider(value=1.0, min=temperatures[0], max=temperatures[1], step=0.5,
                                    description="T")
        self.picker = W.Dropdown(options=[(t[:90], i) for i, t in enumerate(self.texts)], description="example",
                                 layout=W.Layout(width="95%"))
        self.plot = W.Output()
        self.widget = W.VBox([self.picker, self.slider, self.plot])
        self.slider.observe(lambda _: self._redraw(), "value")
        self.picker.observe(lambda _: self._redraw(), "value")
        self._redraw()

    def distribution(self, temperature: float, i: int) -> np.ndarray:
        """Softened class probabilities of example ``i`` at ``temperature``."""
        from .metrics import softmax
        return softmax(self.logits[i:i + 1], temperature)[0]

    def entropy(self, temperature: float, i: int) -> float:
        """Entropy in bits of the softened distribution: 0 = certain, log2(k) = uniform."""
        p = self.distribution(temperature, i)
        return float(-(p * np.log2(np.clip(p, 1e-12, 1))).sum())

    def _redraw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display
        t, i = self.slider.value, self.picker.value
        p = self.distribution(t, i)
        fig, ax = plt.subplots(figsize=(4.5, 2.4))
        ax.bar(self.names, p, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(f"T = {t:.1f}: entropy {self.entropy(t, i):.2f} bits", fontsize=10)
        fig.tight_layout()
        self.plot.clear_output(wait=True)
        with self.plot:
            display(fig)
        plt.close(fig)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
