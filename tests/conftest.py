"""Shared pytest configuration: isolated homes for Prefect, MLflow and Dask per test session."""

from __future__ import annotations

import os
import tempfile

# Isolate every service's state from the user's before anything imports Prefect or MLflow.
_SESSION_HOME = tempfile.mkdtemp(prefix="rho-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_SESSION_HOME, "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)
