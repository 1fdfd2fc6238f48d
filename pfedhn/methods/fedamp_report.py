"""FedAMP's section of the results tables: the attention weights ξ over whole models its runs
report (``method_report["attention"]``: a (clients, clients) matrix, row i the weights of the
model client i starts from), set against how many training classes each pair of clients shares,
as pFedLA's α is per layer (``pfedla_report``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfedhn.report import Label, Run, Section, dataset_label, pair_weight_means, plot_pair_weights


def reporting_attention(found: list[Run], tabled: list[Run]) -> list[Run]:
    """The runs of the accuracy tables that report ξ (``method_report["attention"]``)."""
    return [r for r in tabled if r.result.get("method_report", {}).get("attention")]


def attention_table(runs: list[Run], tabled: list[Run], label: Label) -> str:
    """Per run: its σ and the mean ξ of a client on itself, on class-sharing clients, on the others."""
    lines = [
        "| method | dataset, clients | rounds | σ | ξ on itself | ξ on clients sharing a class | ξ on the others |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        own, share, none = pair_weight_means(np.array(run.result["method_report"]["attention"]), run)
        lines.append(
            f"| {label(run.method)} | {dataset_label(run.dataset)}, {run.clients} | {run.rounds_done} "
            f"| {run.result['config']['method']['sigma']:g} | {own:.3f} | {share:.3f} | {none:.3f} |"
        )
    return "\n".join(lines)


def plot_attention(run: Run, tabled: list[Run], label: Label, static: Path) -> Path:
    """ξ (row i: the weights of the model client i starts from) beside the shared-class counts."""
    attention = np.array(run.result["method_report"]["attention"])
    path = static / f"attention_{run.path.parent.name}.png"  # one per run
    return plot_pair_weights(run, attention, "ξ", "attention ξ over whole models", label, path)


ATTENTION = Section(
    select=reporting_attention,
    caption=(
        "FedAMP's attention weights ξ over whole models at the end of the run (from the models the server "
        "stores then; row i: the weights of the model client i starts from), against the classes clients share:"
    ),
    table=attention_table,
    plot=plot_attention,
)
