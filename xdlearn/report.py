"""Turn the main job's results into ``report.md`` with figures, and ``results.json`` with every number."""
from __future__ import annotations

import json
from pathlib import Path

from . import plots


def _table(rows: list[list], header: list[str]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _distillation_section(results: dict, heading: str | None = None) -> str:
    """The distilled student against its teacher and a label-only twin."""
    d = results.get("distillation")
    if not d:
        return ""
    cfg, acc = results["config"], d["accuracy"]
    large = cfg.get("teacher_model")
    teacher = f"teacher ({large}, fine-tuned on {cfg['budget']} labels)" if large else "teacher (adapted MiniLM)"
    heading = heading or ("## 4. A small student, distilled from " + (f"a large teacher ({large})" if large
                                                                         else "the adapted model"))
    rows = [[teacher, f"{d['parameters']['teacher']:,}", _pct(acc["teacher"]),
             f"{d['examples_per_second']['teacher']:.0f}"],
            [f"{d['kind']} student, distilled", f"{d['parameters']['student']:,}", _pct(acc["student"]),
             f"{d['examples_per_second']['student']:.0f}"],
            [f"{d['kind']} student, {cfg['budget']} labels only", f"{d['parameters']['student']:,}",
             _pct(acc["labels_only"]), "same"]]
    saved = (f"\nThe student is saved in `{d['path']}` ({d['size_mb']} MB); "
             "`xdlearn.students.load(path)` returns it with its tokenizer.\n") if d.get("path") else ""
    used = d.get("transfer_sentences", cfg["transfer_size"])
    fewer = f" (all there were of the {cfg['transfer_size']} asked for)" if used < cfg["transfer_size"] else ""
    return f"""{heading}
The teacher labelled {used} unlabeled {cfg['target']} sentences{fewer} (soft targets, T = {cfg['temperature']});
the student learned from them for {cfg['distill_epochs']} epochs.

{_table(rows, ["model", "parameters", f"accuracy on {cfg['target']}", "inference examples/s"])}

The student keeps {_pct(d['retained'])} of the teacher's accuracy, agrees with it on
{_pct(d['agreement_with_teacher'])} of the test sentences and runs {d['speedup']:.1f}x faster.
{saved}"""


ADAPT_NAMES = {"mlm": "continued MLM pretraining", "dann": "DANN"}


def _target_bars(results: dict) -> dict[str, float]:
    """Every model's accuracy on the target, named for the report's table and bar chart."""
    cfg, tgt, adapted = results["config"], results["target"], results.get("adaptation")
    bars = {"source only": tgt["source_only"], f"{cfg['budget']} target labels": tgt["target_only"],
            f"source + {cfg['budget']} target labels": tgt["source_then_target"]}
    if adapted:
        name = ADAPT_NAMES[adapted["method"]]
        bars[f"source + {name}, 0 target labels"] = adapted["target_zero_labels"]
        bars[f"source + {name} + {cfg['budget']} target labels"] = adapted["target_after_budget"]
    if tgt["in_domain"] is not None:
        bars[f"in-domain ({cfg['train_size']} labels)"] = tgt["in_domain"]
    return bars


def _adaptation_text(results: dict) -> str:
    """What ``--adapt`` did with the unlabeled target text, in one paragraph (empty without it)."""
    adapted, cfg = results.get("adaptation"), results["config"]
    if not adapted:
        return ""
    return (f"\nWith {ADAPT_NAMES[adapted['method']]} on {adapted['unlabeled_sentences']} unlabeled {cfg['target']} "
            f"sentences, the source model scores {_pct(adapted['target_zero_labels'])} on {cfg['target']} before any "
            f"target label (plain source model: {_pct(results['target']['source_only'])}) and "
            f"{_pct(adapted['target_after_budget'])} after the {cfg['budget']} labels; on {cfg['source']} it scores "
            f"{_pct(adapted['source_zero_labels'])}, then {_pct(adapted['source_after_budget'])}. One seed: "
            "a difference of a point or two here is within run-to-run noise."
            + (f" The adapted encoder is saved in `{adapted['encoder_path']}`." if adapted.get("encoder_path") else "")
            + "\n")


def write_report(results: dict, matrix, source_history, target_history, out: Path) -> Path:
    """Write figures, ``results.json`` and a readable ``report.md`` into ``out``."""
    cfg, tgt = results["config"], results["target"]
    plots.save_figure(plots.plot_transfer_matrix(matrix), out / "transfer_matrix.png")
    bars = _target_bars(results)
    plots.save_figure(plots.plot_bars(bars, title=f"accuracy on {cfg['target']} (test)"), out / "target.png")
    plots.save_figure(source_history.plot(title=f"fine-tuning on {cfg['source']}"), out / "source_loss.png")
    plots.save_figure(target_history.plot(title=f"then on {cfg['budget']} {cfg['target']} labels"),
                      out / "target_loss.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    header = ["trained on \\ tested on"] + list(matrix.columns)
    rows = [[s] + [_pct(v) for v in row] for s, row in matrix.iterrows()]
    forget = results["forgetting"]
    text = f"""# xdlearn report: {cfg['source']} -> {cfg['target']}

Model `{cfg['model']}` ({results['model']['parameters']:,} parameters), seed {cfg['seed']}.
Wall time {results['wall_seconds']:.0f} s, peak memory {results['peak_memory_mb']:.0f} MB.

## 1. The domain gap
Each row is a model fine-tuned on {cfg['train_size']} labelled sentences of one domain
({cfg['epochs']} epochs); each column is a test set of {cfg['test_size']} sentences.

{_table(rows, header)}

![transfer matrix](transfer_matrix.png)

## 2. Fine-tuning for the target ({cfg['target']})
{_table([[k, _pct(v)] for k, v in bars.items()], ["model", f"accuracy on {cfg['target']}"])}

![target accuracy](target.png)

Fine-tuning on {cfg['budget']} {cfg['target']} labels moved the {cfg['source']} model from
{_pct(tgt['source_only'])} to {_pct(tgt['source_then_target'])} on {cfg['target']}; its accuracy on
{cfg['source']} went from {_pct(forget['source_accuracy_before'])} to {_pct(forget['source_accuracy_after'])}
(forgetting).

{_adaptation_text(results)}
![source training](source_loss.png) ![target training](target_loss.png)

## 3. The saved model
`{results['model']['path']}` ({results['model']['size_mb']} MB) loads with
`transformers.pipeline("text-classification", model=...)`:

{_table([[e['text'][:70], e['label'], f"{e['score']:.3f}"] for e in results['model']['examples']],
        ["text", "label", "score"])}

{_distillation_section(results)}
Every number above is in `results.json`.
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def write_distill_report(summary: dict, history, out: Path) -> Path:
    """``xdlearn distill``'s report: the student table, its training curve, ``results.json``."""
    cfg = summary["config"]
    plots.save_figure(history.plot(title=f"distilling into a {cfg['student']} student"), out / "distill_loss.png")
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    section = _distillation_section({"config": cfg, "distillation": summary},
                                    heading=f"# xdlearn distillation report: {cfg['target']}")
    text = (f"{section}\nTeacher: `{summary['teacher']}`. Wall time {summary['wall_seconds']:.0f} s, "
            f"peak memory {summary['peak_memory_mb']:.0f} MB.\n\n![distillation](distill_loss.png)\n\n"
            "Every number above is in `results.json`.\n")
    path = out / "report.md"
    path.write_text(text)
    return path
