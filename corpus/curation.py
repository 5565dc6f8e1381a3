"""The curation stage as plain functions: callable from Flyte, DVC (``python -m tasks curate``) and tests.

Five phases, each reading and writing folders, so that the per-document work can be fanned out over shards
(``workflows.curation`` runs the two maps as Flyte ``map_task``s; :func:`run_curation` runs everything here):

  prepare ─► analyse_shard × shards ─► decide ─► tokenize_shard × shards ─► finish

``prepare`` builds the environment tables and the eval index and cuts the raw documents into shards;
``analyse_shard`` computes what each document needs from nobody else (``corpus.shard_work``); ``decide``
makes every order-dependent decision in the original document order (intake's duplicate ids and sizes,
duplicates, contamination, the split) and trains the tokenizer; ``tokenize_shard`` encodes the kept
documents; ``finish`` writes the outputs. The outputs equal the single loop's byte for byte, whatever the
shard size (``tests/curate/test_fanout.py``).

Outputs (all under ``out_dir``):
  tokenizer/                      byte-level BPE (tokenizer.json + HF tokenizer files)
  shards/{train,heldout}-*.bin    uint16 token shards + index.json (sha256 per shard)
  pretrain_documents.parquet      the kept pre-training documents with their split
  sft.parquet                     one verified full-length response per prompt
  candidates.parquet              several verified responses per SFT prompt (shortest-correct / preferences)
  rl_prompts.parquet, eval.parquet, sft_prompts.parquet  environment tasks with verifier payloads
  quarantine.parquet              every rejected row with its rule
  contract_report.json            rows in / kept / quarantined per table and rule, GX suite results
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs import PipelineConfig, config_hash, to_dict
from corpus import dedup
from corpus.decontaminate import EvalIndex
from corpus.env_data import candidate_frame, example_pages, generate_tasks, prompt_frame, sft_frame
from corpus.shard_work import (
    DOCS_PER_SHARD,
    DocRecord,
    IntakeItem,
    analyse_rows,
    chunks,
    dump,
    load,
    tokenize_texts,
)
from corpus.shards import join_documents, write_shards
from corpus.sources import read_extra_documents, stable_seed, stdlib_documents
from corpus.tokenizer import EOS, load_tokenizer, save_tokenizer, train_tokenizer
from data_contracts import (
    CandidateResponse,
    PretrainDocument,
    PromptRow,
    QuarantineLedger,
    SFTExample,
    drop_and_quarantine,
    screen_documents,
    validate_table,
)
from lineage.runs import write_json

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def _screen_prompts(
    frame: pd.DataFrame, ledger: QuarantineLedger, *, table: str, index: EvalIndex | None
) -> pd.DataFrame:
    """Drop within-table duplicate prompts and (for training tables) prompts that leak an eval prompt."""
    normalised = frame["prompt"].map(lambda p: " ".join(p.split()).lower())
    frame = drop_and_quarantine(
        frame,
        normalised.duplicated(keep="first"),
        ledger,
        table=table,
        id_col="prompt_id",
        text_col="prompt",
        rule="exact_duplicate",
        details="prompt seen earlier in the table",
    )
    if index is not None:
        leak = frame["prompt"].map(index.prompt_leak)
        frame = drop_and_quarantine(
            frame,
            leak,
            ledger,
            table=table,
            id_col="prompt_id",
            text_col="prompt",
            rule="eval_contamination",
            details="prompt equals an eval prompt",
        )
    return PromptRow.validate(frame)


def _filter_documents(
    docs: pd.DataFrame, records: list[DocRecord], ledger: QuarantineLedger, cfg: PipelineConfig, index: EvalIndex
) -> pd.DataFrame:
    """Exact, then near duplicates, then eval n-gram overlap, decided in document order from the features
    the map computed (``records[i]`` belongs to ``docs.iloc[i]``)."""
    c = cfg.curate
    table = "pretrain_documents"
    docs = docs.assign(record=range(len(docs)))
    exact = pd.Series(dedup.exact_duplicates_of_keys([r.exact_key for r in records]), index=docs.index)
    docs = drop_and_quarantine(
        docs,
        exact.notna(),
        ledger,
        table=table,
        id_col="doc_id",
        text_col="text",
        rule="exact_duplicate",
        details=exact.map(lambda j: f"same text as {docs.at[j, 'doc_id']}" if pd.notna(j) else ""),
    )
    sigs = np.stack([records[i].signature for i in docs["record"]]) if len(docs) else np.zeros((0, 0), np.uint64)
    near = pd.Series(
        dedup.near_duplicates_of_signatures(sigs, bands=c.minhash_bands, threshold=c.near_duplicate_jaccard),
        index=docs.index,
        dtype=object,
    )
    docs = drop_and_quarantine(
        docs,
        near.notna(),
        ledger,
        table=table,
        id_col="doc_id",
        text_col="text",
        rule="near_duplicate",
        details=near.map(lambda m: f"~{m[1]:.2f} Jaccard with {docs.at[m[0], 'doc_id']}" if m else ""),
    )
    # Environment text is decontaminated where it is generated, task by task (its prompts against the eval
    # prompts, table ``pretrain_prompts``); templated solutions legitimately share n-grams with eval
    # answers, and the search corpus *is* the tools' database. The n-gram check is for free text (the map
    # looked it up only there).
    shared = pd.Series([records[i].shared_ngram for i in docs["record"]], index=docs.index, dtype=object)
    return drop_and_quarantine(
        docs,
        shared.notna(),
        ledger,
        table=table,
        id_col="doc_id",
        text_col="text",
        rule="eval_contamination",
        details=shared.map(lambda g: f"shares eval {index.n}-gram {' '.join(g)!r}" if g else ""),
    )


def _assign_split(docs: pd.DataFrame, *, fraction: float, seed: int) -> pd.DataFrame:
    """Held-out by a stable hash of the document id; at least one document each way."""
    score = docs["doc_id"].map(lambda d: stable_seed(seed, "heldout", d) / 2**32)
    split = np.where(score < fraction, "heldout", "train")
    if len(docs) >= 2 and (split == "heldout").sum() == 0:
        split[int(score.to_numpy().argmin())] = "heldout"
    if len(docs) >= 2 and (split == "train").sum() == 0:
        split[int(score.to_numpy().argmax())] = "train"
    docs = docs.assign(n_chars=docs["text"].str.len().astype(int), split=split)
    return PretrainDocument.validate(docs[["doc_id", "source", "text", "n_chars", "split"]].reset_index(drop=True))


def mixture_copies(docs: pd.DataFrame, env_upsample: int) -> pd.Series:
    """How many times each training document enters the token stream.

    Free text once. Environment example pages ``env_upsample`` times on average, balanced so that every family
    contributes about the same number of characters: terse families (arithmetic) would otherwise be a
    sliver of the stream next to verbose tool-call transcripts, and the tiny model would barely see them.
    """
    is_env = docs["doc_id"].str.startswith("env:")  # example pages; the search corpus is free text here
    family_chars = docs[is_env].groupby("source")["n_chars"].sum()
    if family_chars.empty:
        return pd.Series(1, index=docs.index)
    weight = (env_upsample * family_chars.mean() / family_chars).clip(lower=1, upper=4 * env_upsample)
    return docs["source"].map(weight.round().astype(int)).where(is_env, 1).astype(int)


def run_curation(
    cfg: PipelineConfig,
    out_dir: Path,
    *,
    extra_documents: str | None = None,
    on_bad_rows: str = "quarantine",
    progress: Progress = log.info,
    docs_per_shard: int = DOCS_PER_SHARD,
) -> dict[str, Any]:
    """Run the whole curation stage in this process: every phase, each map over all its shards in turn.
    Returns the contract report (also written to ``contract_report.json``)."""
    with tempfile.TemporaryDirectory(prefix="ling26-curate-") as tmp:
        work = Path(tmp)
        shards = prepare(cfg, work / "prepared", extra_documents=extra_documents, docs_per_shard=docs_per_shard)
        progress(f"analysing documents in {shards} shard(s)")
        analysed = [analyse_shard(cfg, work / "prepared", i, work / "analysed" / f"{i:05d}.pkl") for i in range(shards)]
        pieces = decide(
            cfg, work / "prepared", analysed, work / "decided", on_bad_rows=on_bad_rows, docs_per_shard=docs_per_shard
        )
        progress(f"tokenizing documents in {pieces} shard(s)")
        tokens = [tokenize_shard(work / "decided", i, work / "tokens" / f"{i:05d}.pkl") for i in range(pieces)]
        return finish(cfg, work / "prepared", work / "decided", tokens, out_dir, progress=progress)


def prepare(
    cfg: PipelineConfig,
    work: Path,
    *,
    extra_documents: str | None = None,
    docs_per_shard: int = DOCS_PER_SHARD,
    progress: Progress = log.info,
) -> int:
    """Phase 1: environment tables, prompt screening, the eval index, and the raw pre-training rows cut into
    shards of ``docs_per_shard`` under ``work``; returns the number of shards."""
    from environments import all_environments

    env_cfg, cur = cfg.environments, cfg.curate
    ledger = QuarantineLedger()
    envs = all_environments(env_cfg)
    tables_in: dict[str, int] = {}

    progress("generating environment tasks")
    generated = {
        name: generate_tasks(envs, env_cfg, split=name, seed=cfg.seed, per_family=n)
        for name, n in [
            ("eval", env_cfg.eval_prompts_per_family),
            ("rl", env_cfg.rl_prompts_per_family),
            ("sft", env_cfg.sft_prompts_per_family),
            ("pretrain", cur.env_pretrain_prompts_per_family),
        ]
    }
    task_by_id = {t.task_id: t for tasks in generated.values() for t in tasks}
    splits = {name: prompt_frame(tasks) for name, tasks in generated.items()}
    for name, frame in splits.items():
        tables_in[f"{name}_prompts"] = len(frame)
    eval_df = _screen_prompts(splits["eval"], ledger, table="eval_prompts", index=None)
    index = EvalIndex.build(zip(eval_df["prompt"], eval_df["answer"], strict=True), n=cur.decontam_ngram)
    kept = {
        name: _screen_prompts(splits[name], ledger, table=f"{name}_prompts", index=index)
        for name in ("rl", "sft", "pretrain")
    }

    progress("writing verified candidate responses")
    sft_tasks = [task_by_id[i] for i in kept["sft"]["prompt_id"]]
    candidates = CandidateResponse.validate(
        candidate_frame(envs, sft_tasks, seed=cfg.seed, n=env_cfg.responses_per_prompt)
    )
    sft = SFTExample.validate(sft_frame(candidates))

    progress("collecting pre-training documents")
    raw_rows = stdlib_documents(cur.stdlib_max_files, cfg.seed)
    raw_rows += example_pages(envs, [task_by_id[i] for i in kept["pretrain"]["prompt_id"]], seed=cfg.seed, eos=EOS)
    for family in env_cfg.families:
        raw_rows += [
            {"doc_id": f"env-corpus:{family}:{i}", "source": f"env-{family}-corpus", "text": text}
            for i, text in enumerate(envs[family].pretrain_documents())
        ]
    intakes = [raw_rows]
    if extra_documents:
        intakes.append(list(read_extra_documents(extra_documents)))
    items = [IntakeItem(k, position, row) for k, rows in enumerate(intakes) for position, row in enumerate(rows)]
    pieces = chunks(len(items), docs_per_shard)
    for i, piece in enumerate(pieces):
        dump(items[piece.start : piece.stop], work / f"rows-{i:05d}.pkl")
    dump(index, work / "index.pkl")  # what a map item reads besides its rows
    state = {
        "ledger": ledger,
        "tables_in": tables_in,
        "eval": eval_df,
        "kept": kept,
        "candidates": candidates,
        "sft": sft,
        "index": index,
        "intakes": len(intakes),
    }
    dump(state, work / "prepared.pkl")
    return len(pieces)


def analyse_shard(cfg: PipelineConfig, prepared: Path, shard: int, out: Path) -> Path:
    """Phase 2, one map item: the per-document records of raw-row shard ``shard``, written to ``out``."""
    c = cfg.curate
    records = analyse_rows(
        load(prepared / f"rows-{shard:05d}.pkl"),
        index=load(prepared / "index.pkl"),
        shingle=c.shingle_chars,
        permutations=c.minhash_permutations,
        seed=cfg.seed,
    )
    return dump(records, out)


def decide(
    cfg: PipelineConfig,
    prepared: Path,
    analysed: list[Path],
    work: Path,
    *,
    on_bad_rows: str = "quarantine",
    docs_per_shard: int = DOCS_PER_SHARD,
    progress: Progress = log.info,
) -> int:
    """Phase 3, the first reduce: intake's order-dependent rules, duplicates, contamination and the split in
    the original document order; the tokenizer trained; the kept texts cut into shards for tokenization.
    Returns the number of those shards."""
    cur = cfg.curate
    state = load(prepared / "prepared.pkl")
    ledger, tables_in = state["ledger"], state["tables_in"]
    records = [record for path in analysed for record in load(path)]
    # Our own sources always quarantine; ``on_bad_rows`` decides for the user's documents (intake 1).
    seen_ids: set[str] = set()
    intakes = [
        screen_documents(
            [r.intake_row() for r in records if r.intake == k],
            ledger,
            table="pretrain_documents",
            min_chars=cur.min_doc_chars,
            max_chars=cur.max_doc_chars,
            on_bad_rows=on_bad_rows if k else "quarantine",
            seen_ids=seen_ids,
        )
        for k in range(state["intakes"])
    ]
    kept_docs = pd.concat([i.kept for i in intakes], ignore_index=True)
    tables_in["pretrain_documents"] = sum(i.rows_in for i in intakes)
    # A kept document is the first well-formed row with its id: it claimed the id, so no later row kept it.
    first_with_id: dict[str, DocRecord] = {}
    for record in records:
        if record.doc is not None:
            first_with_id.setdefault(record.doc["doc_id"], record)
    kept_records = [first_with_id[doc_id] for doc_id in kept_docs["doc_id"]]

    progress(f"deduplicating and decontaminating {len(kept_docs)} documents")
    docs = _assign_split(
        _filter_documents(kept_docs, kept_records, ledger, cfg, state["index"]),
        fraction=cur.heldout_fraction,
        seed=cfg.seed,
    )

    progress("training the tokenizer")
    sft = state["sft"]
    corpus = [*docs.loc[docs["split"] == "train", "text"], *(sft["prompt"] + sft["response"])]
    save_tokenizer(train_tokenizer(corpus, vocab_size=cur.vocab_size), work / "tokenizer")
    pieces = chunks(len(docs), docs_per_shard)
    for i, piece in enumerate(pieces):
        dump(docs["text"].iloc[piece.start : piece.stop].tolist(), work / f"texts-{i:05d}.pkl")
    dump({"ledger": ledger, "tables_in": tables_in, "docs": docs}, work / "decided.pkl")
    return len(pieces)


def tokenize_shard(decided: Path, shard: int, out: Path) -> Path:
    """Phase 4, one map item: token ids (+ EOS) of each document of text shard ``shard``, written to ``out``."""
    tokenizer = load_tokenizer(decided / "tokenizer")
    return dump(tokenize_texts(tokenizer, load(decided / f"texts-{shard:05d}.pkl"), tokenizer.token_to_id(EOS)), out)


def finish(
    cfg: PipelineConfig,
    prepared: Path,
    decided: Path,
    tokens: list[Path],
    out_dir: Path,
    *,
    progress: Progress = log.info,
) -> dict[str, Any]:
    """Phase 5, the last reduce: token shards in the mixture's order, contract suites, every table and the
    contract report written to ``out_dir``; returns the report."""
    cur = cfg.curate
    out_dir.mkdir(parents=True, exist_ok=True)
    state, final = load(prepared / "prepared.pkl"), load(decided / "decided.pkl")
    ledger, tables_in, docs = final["ledger"], final["tables_in"], final["docs"]
    eval_df, kept, candidates, sft, index = (state[k] for k in ("eval", "kept", "candidates", "sft", "index"))
    shutil.copytree(decided / "tokenizer", out_dir / "tokenizer", dirs_exist_ok=True)
    tokenizer = load_tokenizer(decided / "tokenizer")
    doc_tokens = [piece for path in tokens for piece in load(path)]  # one array per row of docs

    progress("writing token shards")
    train = np.flatnonzero(docs["split"].to_numpy() == "train")
    copies = mixture_copies(docs.iloc[train], cur.env_upsample)
    stream = [
        (stable_seed(cfg.seed, "order", doc_id, k), row)
        for row, doc_id, n in zip(train, docs["doc_id"].iloc[train], copies, strict=True)
        for k in range(n)
    ]
    stream.sort(key=lambda item: item[0])
    shard_entries = write_shards(
        join_documents([doc_tokens[row] for _, row in stream]),
        out_dir / "shards",
        split="train",
        shard_tokens=cur.shard_tokens,
    )
    heldout = np.flatnonzero(docs["split"].to_numpy() == "heldout")
    shard_entries += write_shards(
        join_documents([doc_tokens[row] for row in heldout]),
        out_dir / "shards",
        split="heldout",
        shard_tokens=cur.shard_tokens,
    )
    shard_index = pd.DataFrame(shard_entries)
    write_json(out_dir / "shards" / "index.json", shard_entries)

    progress("checking great-expectations suites")
    suites = [
        validate_table(docs, "pretrain_documents", min_chars=cur.min_doc_chars, max_chars=cur.max_doc_chars),
        validate_table(kept["rl"], "prompts", table="rl_prompts"),
        validate_table(eval_df, "prompts", table="eval_prompts"),
        validate_table(sft, "sft"),
        validate_table(candidates, "candidates"),
        validate_table(shard_index, "shards"),
    ]

    tables_out = {
        "eval_prompts": len(eval_df),
        "rl_prompts": len(kept["rl"]),
        "sft_prompts": len(kept["sft"]),
        "pretrain_prompts": len(kept["pretrain"]),
        "pretrain_documents": len(docs),
    }
    report = {
        "config_hash": config_hash(cfg),
        "tables": {
            name: {
                "rows_in": tables_in[name],
                "rows_kept": tables_out[name],
                "rows_quarantined": ledger.count(name),
                "quarantined_by_rule": ledger.counts(name),
            }
            for name in tables_in
        },
        "suites": [s.as_dict() for s in suites],
        "decontamination": {
            "ngram": index.n,
            "eval_content_ngrams": len(index.content_ngrams),
            "template_ngrams_ignored": index.template_ngrams_ignored,
        },
        "tokens": {
            split: int(shard_index.loc[shard_index["split"] == split, "n_tokens"].sum())
            for split in ("train", "heldout")
        },
        "sft_examples": len(sft),
        "candidates": len(candidates),
        "tokenizer_vocab": tokenizer.get_vocab_size(),
    }
    for name, t in report["tables"].items():
        if t["rows_in"] != t["rows_kept"] + t["rows_quarantined"]:
            raise AssertionError(
                f"{name}: rows_in {t['rows_in']} != kept {t['rows_kept']} + quarantined {t['rows_quarantined']}"
            )

    docs.to_parquet(out_dir / "pretrain_documents.parquet", index=False)
    sft.to_parquet(out_dir / "sft.parquet", index=False)
    candidates.to_parquet(out_dir / "candidates.parquet", index=False)
    kept["rl"].to_parquet(out_dir / "rl_prompts.parquet", index=False)
    kept["sft"].to_parquet(out_dir / "sft_prompts.parquet", index=False)
    eval_df.to_parquet(out_dir / "eval.parquet", index=False)
    ledger.frame().to_parquet(out_dir / "quarantine.parquet", index=False)
    write_json(out_dir / "config.json", to_dict(cfg))
    write_json(out_dir / "contract_report.json", report)
    return report
