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

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (temporary server + database) for the whole session.

    Starting it costs 10-16 s, so every test that runs flows shares it. Flow-run heartbeats are
    disabled (each sync flow run would otherwise spend about 1 s joining the heartbeat thread).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory):
    """An empty, fully migrated MLflow SQLite database, made once per session.

    Creating the schema (alembic migrations) costs several seconds; tests copy this file.
    """
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, _mlflow_template_db):
    """A fresh SQLite MLflow tracking URI (artifacts beside it) for one test."""
    import shutil

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(_mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("RHO_MLFLOW_ARTIFACTS", raising=False)
    return uri


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test: the tensors of these tests are tiny, and on a
    shared 2-core machine OpenMP threads only spin-wait against each other. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
