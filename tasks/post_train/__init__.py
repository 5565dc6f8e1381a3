"""Post-training stage (the instant "Ling" model): shortest-correct SFT -> LPO RL with Evo-CoT rewards ->
bidirectional preference alignment, each phase evaluated by the harness."""
