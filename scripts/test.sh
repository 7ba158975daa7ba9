#!/usr/bin/env bash
# Run the test suite inside .venv with isolated Prefect/MLflow homes. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export DASK_LOGGING__DISTRIBUTED=warning
export MPLBACKEND=Agg
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi
exit "$rc"
