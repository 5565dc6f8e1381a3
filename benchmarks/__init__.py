"""Side-by-side benchmarks; each prints JSON with the ratios it measured. Results: BENCHMARKS.md."""
