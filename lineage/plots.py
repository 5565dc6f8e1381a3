"""Plots every stage logs (MLflow artifacts) and shows (Flyte Decks); matplotlib, headless."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(values: Mapping[str, float], *, title: str, xlabel: str = "", ylabel: str = "count") -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    keys = list(values)
    ax.barh(keys, [values[k] for k in keys], color="#4C72B0")
    ax.set_title(title)
    ax.set_xlabel(ylabel)
    ax.set_ylabel(xlabel)
    for i, k in enumerate(keys):
        ax.text(values[k], i, f" {values[k]:g}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def histogram(
    samples: Mapping[str, Sequence[float]], *, title: str, xlabel: str, bins: int = 40, log_x: bool = False
) -> Any:
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    every = np.concatenate([np.asarray(v, dtype=float) for v in samples.values() if len(v)])
    edges = (
        np.geomspace(max(every.min(), 1), every.max() + 1, bins)
        if log_x
        else np.linspace(every.min(), every.max(), bins)
    )
    for label, values in samples.items():
        if len(values):
            ax.hist(values, bins=edges, alpha=0.6, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str, ylabel: str
) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figure_html(fig: Any) -> str:
    """Inline PNG ``<img>`` for a Flyte Deck."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"


def contract_counts_html(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per screened table: rows in / kept / quarantined and the quarantine count per rule."""
    counts = ("rows_in", "rows_kept", "rows_quarantined")
    rows = [
        {
            "table": table,
            **{c: t[c] for c in counts},
            "by rule": ", ".join(f"{rule}={n}" for rule, n in t["quarantined_by_rule"].items()),
        }
        for table, t in tables.items()
    ]
    return table_html(rows, ["table", *counts, "by rule"])
