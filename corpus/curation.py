"""The curation stage as a plain function: callable from Flyte, DVC (``python -m tasks.curate``) and tests.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs import PipelineConfig, config_hash, to_dict
from corpus import dedup
from corpus.decontaminate import EvalIndex
from corpus.env_data import candidate_frame, example_pages, generate_tasks, prompt_frame, sft_frame
from corpus.shards import tokenize_documents, write_shards
from corpus.sources import read_extra_documents, stable_seed, stdlib_documents
from corpus.tokenizer import EOS, save_tokenizer, train_tokenizer
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
    docs: pd.DataFrame, ledger: QuarantineLedger, cfg: PipelineConfig, index: EvalIndex
) -> pd.DataFrame:
    c = cfg.curate
    table = "pretrain_documents"
    texts = docs["text"].tolist()
    exact = pd.Series(dedup.exact_duplicates(texts), index=docs.index)
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
    near = pd.Series(
        dedup.near_duplicates(
            docs["text"].tolist(),
            shingle=c.shingle_chars,
            permutations=c.minhash_permutations,
            bands=c.minhash_bands,
            threshold=c.near_duplicate_jaccard,
            seed=cfg.seed,
        ),
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
    # answers, and the search corpus *is* the tools' database. The n-gram check is for free text.
    free_text = ~docs["source"].str.startswith("env-")
    shared = docs["text"].where(free_text, "").map(index.shared_ngram)
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
) -> dict[str, Any]:
    """Run the whole curation stage; returns the contract report (also written to ``contract_report.json``)."""
    from environments import all_environments

    out_dir.mkdir(parents=True, exist_ok=True)
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
    # Our own sources always quarantine; ``on_bad_rows`` decides for the user's documents.
    seen_ids: set[str] = set()
    intakes = [
        screen_documents(
            raw_rows,
            ledger,
            table="pretrain_documents",
            min_chars=cur.min_doc_chars,
            max_chars=cur.max_doc_chars,
            seen_ids=seen_ids,
        )
    ]
    if extra_documents:
        intakes.append(
            screen_documents(
                read_extra_documents(extra_documents),
                ledger,
                table="pretrain_documents",
                min_chars=cur.min_doc_chars,
                max_chars=cur.max_doc_chars,
                on_bad_rows=on_bad_rows,
                seen_ids=seen_ids,
            )
        )
    kept_docs = pd.concat([i.kept for i in intakes], ignore_index=True)
    tables_in["pretrain_documents"] = sum(i.rows_in for i in intakes)

    progress(f"deduplicating and decontaminating {len(kept_docs)} documents")
    docs = _assign_split(_filter_documents(kept_docs, ledger, cfg, index), fraction=cur.heldout_fraction, seed=cfg.seed)

    progress("training the tokenizer")
    train_docs = docs[docs["split"] == "train"]
    corpus = [*train_docs["text"], *(sft["prompt"] + sft["response"])]
    tokenizer = train_tokenizer(corpus, vocab_size=cur.vocab_size)
    save_tokenizer(tokenizer, out_dir / "tokenizer")
    eos_id = tokenizer.token_to_id(EOS)

    progress("writing token shards")
    copies = mixture_copies(train_docs, cur.env_upsample)
    stream = [
        (stable_seed(cfg.seed, "order", doc_id, k), text)
        for doc_id, text, n in zip(train_docs["doc_id"], train_docs["text"], copies, strict=True)
        for k in range(n)
    ]
    stream.sort(key=lambda item: item[0])
    shard_entries = write_shards(
        tokenize_documents(tokenizer, [text for _, text in stream], eos_id),
        out_dir / "shards",
        split="train",
        shard_tokens=cur.shard_tokens,
    )
    heldout_docs = docs[docs["split"] == "heldout"]
    shard_entries += write_shards(
        tokenize_documents(tokenizer, heldout_docs["text"].tolist(), eos_id),
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
