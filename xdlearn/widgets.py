"""Interactive pieces for JupyterLab: a live training board, teacher vs student, a temperature explorer.

Widgets also work headless (nbval, the book build): they are created, updated and displayed as
usual; without a browser only their text form is shown.
"""
from __future__ import annotations

from html import escape

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


def shorten(text: str, width: int = 90) -> str:
    """``text`` cut at a word boundary with an ellipsis, so a dropdown never shows half a word."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    if text[width - 1] != " " and " " in cut[width // 2:]:
        cut = cut[:cut.rindex(" ")]  # drop the partial last word, unless that would lose most of the line
    return cut.rstrip(" ,;:-") + "…"


def _bars_html(probs, names, color: str, model: str) -> str:
    """Class probabilities as small horizontal HTML bars, each with its number (renders anywhere)."""
    rows = "".join(
        f"<div style='display:flex;align-items:center;gap:6px'><span style='width:70px'>{escape(n)}</span>"
        f"<span style='display:inline-block;width:{int(160 * p)}px;height:10px;background:{color}'></span>"
        f"<span class='xd-prob' data-model='{model}' data-class='{escape(n)}'>{p:.3f}</span></div>"
        for n, p in zip(names, probs))
    return f"<div>{rows}</div>"


def _verdict_html(names, teacher, student) -> str:
    """Each model's predicted class and whether the two agree, in one line."""
    t, s = int(np.argmax(teacher)), int(np.argmax(student))
    verdict = "they agree" if t == s else "they disagree"
    return (f"<p class='xd-verdict'>teacher predicts <b>{escape(names[t])}</b> ({teacher[t]:.3f}), "
            f"student predicts <b>{escape(names[s])}</b> ({student[s]:.3f}): <b>{verdict}</b></p>")


class TeacherStudentComparison:
    """Teacher and student side by side: pick an example or type a sentence, browse disagreements.

    Works headless too: ``compare(text)``, ``disagreements()`` and ``summary`` give the same facts, and
    ``shown`` says what the view shows (an example, a typed sentence, or a message).
    """

    def __init__(self, teacher, student, tokenizer, examples, student_tokenizer=None, max_length: int = 128):
        from .infer import predict
        from .metrics import softmax
        if len(examples) == 0:
            raise ValueError("TeacherStudentComparison needs at least one example sentence")
        self.teacher, self.student = teacher, student
        self.tokenizer, self.student_tokenizer = tokenizer, student_tokenizer or tokenizer
        self.examples, self.max_length = examples, max_length
        self.names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        self.p_teacher = softmax(predict(teacher, examples, tokenizer, max_length=max_length))
        self.p_student = softmax(predict(student, examples, self.student_tokenizer, max_length=max_length))
        self.summary = self._summarise()
        self.shown: dict = {}
        self._build()

    def _summarise(self) -> dict:
        """Agreement, confidence and (with labels) accuracy of both models on the examples."""
        agree = self.p_teacher.argmax(-1) == self.p_student.argmax(-1)
        summary = {"agreement": float(agree.mean()), "examples": len(self.examples),
                   "teacher_confidence": float(self.p_teacher.max(-1).mean()),
                   "student_confidence": float(self.p_student.max(-1).mean())}
        if "label" in self.examples.column_names:
            labels = np.asarray(self.examples["label"])
            summary["teacher_accuracy"] = float((self.p_teacher.argmax(-1) == labels).mean())
            summary["student_accuracy"] = float((self.p_student.argmax(-1) == labels).mean())
        return summary

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
        self.picker = W.Dropdown(options=self._options(), value=None, description="example",
                                 layout=W.Layout(width="95%"))
        self.typed = W.Text(placeholder="or type a sentence and press Enter", continuous_update=False,
                            layout=W.Layout(width="95%"))
        self.view = W.HTML()
        head = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.summary.items())
        self.widget = W.VBox([W.HTML(f"<b>teacher vs student</b>: {head}"), self.only_disagree,
                              self.picker, self.typed, self.view])
        for part in (self.widget, self.picker, self.typed, self.view):
            part.add_class("xd-comparison")  # handles for a browser test
        self.only_disagree.observe(lambda _: self._refresh_options(), "value")
        self.picker.observe(lambda change: self.show_index(change["new"]), "value")
        self.typed.observe(lambda change: self.show_text(change["new"]), "value")
        self._refresh_options()

    def _options(self) -> list[tuple[str, int]]:
        indices = self.disagreements() if self.only_disagree.value else range(len(self.examples))
        return [(shorten(self.examples[int(i)]["text"]), int(i)) for i in list(indices)[:500]]

    def _refresh_options(self) -> None:
        """Offer all examples or only the disagreements, and show the first (or say there are none)."""
        options = self._options()
        self.picker.options = options
        if options:
            self.picker.value = options[0][1]
            self.show_index(options[0][1])
            return
        message = f"no disagreements among {len(self.examples)} examples: teacher and student agree on every one"
        self.shown = {"message": message}
        self.view.value = f"<p class='xd-message'><i>{message}</i></p>"

    def _render(self, text: str, teacher, student, truth: str | None, source: str) -> None:
        teacher, student = np.asarray(teacher, dtype=float), np.asarray(student, dtype=float)
        self.shown = {"source": source, "text": text, "teacher": teacher, "student": student,
                      "agree": bool(teacher.argmax() == student.argmax())}
        label = f"<br><i>true label: {escape(truth)}</i>" if truth is not None else ""
        self.view.value = (f"<p>{escape(text)}{label}</p>{_verdict_html(self.names, teacher, student)}"
                           "<div style='display:flex;gap:40px'>"
                           f"<div><b>teacher</b>{_bars_html(teacher, self.names, '#1f77b4', 'teacher')}</div>"
                           f"<div><b>student</b>{_bars_html(student, self.names, '#ff7f0e', 'student')}</div></div>")

    def show_index(self, i: int | None) -> None:
        """Show example ``i`` of the comparison set (``None``: nothing picked, e.g. after typing)."""
        if i is None:
            return
        if self.typed.value:
            self.typed.value = ""  # the box would otherwise still show a sentence that is no longer displayed
        row = self.examples[int(i)]
        truth = self.names[row["label"]] if "label" in row else None
        self._render(row["text"], self.p_teacher[i], self.p_student[i], truth, "example")

    def show_text(self, text: str) -> None:
        """Show a typed sentence and deselect the dropdown, which no longer matches the view."""
        if not text.strip():
            return
        self.picker.value = None
        result = self.compare(text)
        self._render(text, list(result["teacher"].values()), list(result["student"].values()), None, "typed")

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


CONFIDENT = 0.8   # below this top probability at T = 1 the temperature explorer says the teacher is unsure


class TemperatureExplorer:
    r"""A slider for :math:`T` showing the teacher's softened distribution :math:`\sigma(z/T)` and its entropy.

    It opens on the example the teacher is surest of (largest logit margin), where temperature shows most,
    and says so when even that one is nearly uniform (a briefly trained teacher, e.g. at smoke size).
    """

    def __init__(self, logits, texts: list[str], names: list[str], temperatures=(0.5, 10.0)):
        self.logits, self.texts, self.names = np.asarray(logits, dtype=float), list(texts), list(names)
        if self.logits.ndim != 2 or len(self.logits) != len(self.texts) or self.logits.shape[1] != len(self.names):
            raise ValueError(f"logits of shape {self.logits.shape} do not match {len(self.texts)} texts "
                             f"and {len(self.names)} class names")
        self.slider = W.FloatSlider(value=1.0, min=temperatures[0], max=temperatures[1], step=0.5,
                                    description="T")
        self.picker = W.Dropdown(options=[(shorten(t), i) for i, t in enumerate(self.texts)],
                                 value=self.most_confident(), description="example", layout=W.Layout(width="95%"))
        self.readout, self.note, self.plot = W.HTML(), W.HTML(self._confidence_note()), W.Output()
        self.widget = W.VBox([self.note, self.picker, self.slider, self.readout, self.plot])
        for part in (self.widget, self.slider, self.readout):
            part.add_class("xd-temperature")  # handles for a browser test
        self.slider.observe(lambda _: self._redraw(), "value")
        self.picker.observe(lambda _: self._redraw(), "value")
        self._redraw()

    def margin(self, i: int) -> float:
        """Gap between example ``i``'s two largest logits: how sure the teacher is of its top class."""
        top = np.sort(self.logits[i])[::-1]
        return float(top[0] - top[1]) if len(top) > 1 else float("inf")

    def most_confident(self) -> int:
        """Index of the example with the largest logit margin."""
        return int(np.argmax([self.margin(i) for i in range(len(self.texts))]))

    def _confidence_note(self) -> str:
        """A warning when even the surest example is nearly uniform, so a flat plot is not a mystery."""
        best = self.most_confident()
        top = float(self.distribution(1.0, best).max())
        if top >= CONFIDENT:
            return ""
        return (f"<p class='xd-note'><i>The teacher is unsure of every one of these sentences (its surest "
                f"probability at T = 1 is {top:.3f}, logit margin {self.margin(best):.2f}), so the distribution is "
                "nearly flat at any T and the slider changes little. A teacher trained on more sentences "
                "(the teaching size rather than XDLEARN_QUICK=1) is confident and shows the effect.</i></p>")

    def distribution(self, temperature: float, i: int) -> np.ndarray:
        """Softened class probabilities of example ``i`` at ``temperature``."""
        from .metrics import softmax
        return softmax(self.logits[i:i + 1], temperature)[0]

    def entropy(self, temperature: float, i: int) -> float:
        """Entropy in bits of the softened distribution: 0 = certain, log2(k) = uniform."""
        p = self.distribution(temperature, i)
        return float(-(p * np.log2(np.clip(p, 1e-12, 1))).sum())

    def figure(self, temperature: float, i: int):
        """Bar chart of example ``i``'s softened distribution, each bar labelled with its probability."""
        import matplotlib.pyplot as plt
        p = self.distribution(temperature, i)
        fig, ax = plt.subplots(figsize=(4.5, 2.4))
        bars = ax.bar(self.names, p, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in p], fontsize=9, padding=2)
        ax.set_ylim(0, 1.15)  # room for the label above a bar of 1.0
        ax.set_ylabel("probability")
        ax.set_title(f"T = {temperature:.1f}: entropy {self.entropy(temperature, i):.2f} bits", fontsize=10)
        fig.tight_layout()
        return fig

    def _redraw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display
        t, i = self.slider.value, self.picker.value
        self.readout.value = (f"<span class='xd-entropy'>T = {t:.1f}: entropy {self.entropy(t, i):.4f} bits</span>; "
                              + ", ".join(f"{escape(n)} {v:.3f}" for n, v in zip(self.names, self.distribution(t, i))))
        fig = self.figure(t, i)
        self.plot.clear_output(wait=True)
        with self.plot:
            display(fig)
        plt.close(fig)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
