"""Curation stage: environments + local text -> tokenizer, token shards and contract-checked tables.

The library (``stage.run_curation``) runs without Flyte; ``task.curate`` is the Flyte task and
``python -m tasks.curate`` the DVC entry point.
"""
