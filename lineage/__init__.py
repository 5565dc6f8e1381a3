"""Lineage: MLflow runs (parent per pipeline execution, nested per stage) with run manifests, dataset
inputs and plots; DVC versioning of stage outputs; where the embedded stores live."""
