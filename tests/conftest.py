"""Suite-wide test environment, set before any test module imports project code.

* TRITON_INTERPRET: Triton kernels are compiled (or interpreted) when ``kernels.lightning`` is first
  imported, whichever test directory does it first; CPU runs need the interpreter. ``setdefault`` lets
  a GPU machine run the same files compiled with ``TRITON_INTERPRET=0``.
* Run state (MLflow store, DVC remote, stage outputs) goes to a per-session temp folder, never into the
  developer's ``.ling26/`` or ``data/``.
"""

import os
import tempfile

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LING26_PROGRESS", "0")
_STATE = tempfile.mkdtemp(prefix="ling26-test-state-")
os.environ["LING26_STATE_DIR"] = _STATE
os.environ["LING26_DATA_DIR"] = os.path.join(_STATE, "data")
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """``lineage.runs.configure`` calls ``mlflow.set_tracking_uri``, which exports ``MLFLOW_TRACKING_URI``, and
    ``lineage.paths.tracking_uri`` (like every worker process a test starts) prefers that variable: without this,
    one test's MLflow store silently becomes the next test's. ``monkeypatch.delenv`` cannot undo it, because it
    restores the value it removed."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
