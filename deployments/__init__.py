"""How the flows are deployed: :mod:`deployments.serve` (``rho serve``), ``prefect.yaml`` for a
process work pool, and :mod:`deployments.servers` (start/stop the local Prefect and MLflow
servers for ``rho ui`` and the tests)."""
