"""The post-training library (the instant "Ling" model): shortest-correct SFT -> LPO RL with Evo-CoT rewards
-> bidirectional preference alignment, each phase evaluated by the harness. ``run.run_post_train`` is what
the post_train stage calls."""
