"""One thin Flyte task per pipeline stage, with its library modules beside it."""
