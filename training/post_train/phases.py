"""The three post-training phases of the instant "Ling" model (METHODS §5-6), each a function that updates the
model in place through the one training loop (``training.loop.train``: atomic checkpoints every
``checkpoint_every``, resume from the newest) and reports per-step metrics through ``on_log``:

1. ``sft_phase`` (``training.post_train.sft``): SFT on shortest-correct responses (selection + pruning of
   verified candidates);
2. ``rl_phase`` (``training.post_train.rl``): synchronous on-policy RL with Evo-CoT rewards and the LPO loss
   (GRPO / GSPO selectable);
3. ``preference_phase`` (``training.post_train.preference``): bidirectional preference alignment (offset DPO)
   on verified on-policy pairs.

One module per phase, each with its batch source for the loop; this one names them together for callers that
run the recipe (the stage, the benchmarks). SFT rows and preference pairs are ``SFTExample`` /
``PreferencePair`` tables; a phase trains only on rows that passed their contract
(``training.post_train.contracts``).
"""

from __future__ import annotations

from training.post_train.preference import pair_loss, pair_table, preference_phase
from training.post_train.rl import rl_phase, sample_groups
from training.post_train.sft import sft_phase, sft_rows

__all__ = ["pair_loss", "pair_table", "preference_phase", "rl_phase", "sample_groups", "sft_phase", "sft_rows"]
