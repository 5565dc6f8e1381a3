"""Suite-wide test environment, set before any test module imports project code.

* TRITON_INTERPRET: Triton kernels are compiled (or interpreted) when ``kernels.lightning`` is first
  imported, whichever test directory does it first; CPU runs need the interpreter. ``setdefault`` lets
  a GPU machine run the same files compiled with ``TRITON_INTERPRET=0``.
* Run state (MLflow store, DVC remote, stage outputs) goes to a per-session temp folder, never into the
  developer's ``.ling26/`` or ``data/``.
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LING26_PROGRESS", "0")
_STATE = tempfile.mkdtemp(prefix="ling26-test-state-")
os.environ["LING26_STATE_DIR"] = _STATE
os.environ["LING26_DATA_DIR"] = os.path.join(_STATE, "data")
os.environ.pop("MLFLOW_TRACKING_URI", None)
