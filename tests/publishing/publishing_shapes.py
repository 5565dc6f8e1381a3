"""Shapes the publishing tests share. A module of its own, not conftest: two test folders have a conftest,
so ``from conftest import ...`` picks whichever pytest imported first."""

# The tiny model holds ~7 MB of fp32 tensors: 2 MB shards make a sharded folder of it.
SHARD_BYTES = 2_000_000
