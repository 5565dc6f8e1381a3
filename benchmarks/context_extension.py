"""The migration stage's context extension, as one run measured it: pass-key retrieval by length (and by
length and depth) before and after extension on the same prompts, the held-out loss on the short windows at
the end of continued pre-training and after extension (the gate's number), and the extension's YaRN factor,
steps and expert-bias rate. Reads what ``python -m tasks migrate`` wrote; prints JSON and Markdown tables.

    python -m benchmarks.context_extension --help
    python -m benchmarks.context_extension --migrate data/migrate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

STAGE_KEYS = ("seq_len", "steps", "lr", "yarn_factor", "long_document_fraction", "router_bias_update_rate",
              "train_loss")  # fmt: skip


def summary(migrate: Path) -> dict:
    """The extension's numbers from a migration output folder."""
    from data_contracts.evaluation import RetrievalRow

    metrics = json.loads((migrate / "metrics.json").read_text())
    table = RetrievalRow.validate(pd.read_parquet(migrate / "retrieval.parquet"))
    points = {p["point"]: p for p in metrics["steps"]}
    extension = metrics["context_extension"]
    by_length = table.groupby(["length", "checkpoint"])["accuracy"].mean().unstack("checkpoint")
    return {
        "rope_scaling": extension["rope_scaling"],
        "stages": [{k: s.get(k) for k in STAGE_KEYS} for s in extension["stages"]],
        "heldout_loss": {
            "base": metrics["base_heldout_loss"],
            "continued_pretraining": points["continued_pretraining"]["heldout_loss"],
            "context_extension": points["context_extension"]["heldout_loss"],
        },
        "parity_gate": metrics["parity_gate"],
        "retrieval_by_length": {int(k): v for k, v in by_length.to_dict("index").items()},
        "retrieval": table.to_dict("records"),
    }


def markdown(result: dict) -> str:
    rows = ["| length | before extension | after extension |", "|---|---|---|"]
    for length, cell in sorted(result["retrieval_by_length"].items()):
        rows.append(f"| {length} | {cell['before_extension']:.3f} | {cell['after_extension']:.3f} |")
    depth = ["| length | depth | n | before | after |", "|---|---|---|---|---|"]
    cells = {}
    for r in result["retrieval"]:
        cells.setdefault((r["length"], r["depth"]), {})[r["checkpoint"]] = r
    for (length, d), pair in sorted(cells.items()):
        before, after = pair["before_extension"], pair["after_extension"]
        depth.append(f"| {length} | {d:g} | {before['n']} | {before['correct']} | {after['correct']} |")
    return "\n".join(rows) + "\n\n" + "\n".join(depth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrate", type=Path, default=Path("data/migrate"), help="the migration stage's output")
    args = parser.parse_args(argv)
    result = summary(args.migrate)
    print(json.dumps({k: v for k, v in result.items() if k != "retrieval"}, indent=2, default=float))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
