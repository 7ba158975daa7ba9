#!/usr/bin/env bash
# The main job: the end-to-end pipeline on the embedded defaults (local Prefect, SQLite MLflow
# under data/). Extra args go to `rho pipeline`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export DASK_LOGGING__DISTRIBUTED=warning
export MPLBACKEND=Agg
exec .venv/bin/rho pipeline --quick "$@"
