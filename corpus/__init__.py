"""Text -> tokens: raw sources and intake, exact + near-duplicate removal, decontamination against the eval
sets, the byte-level BPE tokenizer and token shards; and the whole curation run (``curation.run_curation``)
that the curate stage calls. What every later stage that reads tokens shares."""
