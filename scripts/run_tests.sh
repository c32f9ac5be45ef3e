#!/usr/bin/env bash
# The test command: installs what it needs (./.venv), then runs the whole suite on CPU (2 workers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
# Two pytest workers (the suite's tests are independent; PYTEST_WORKERS=0 runs them in this one process).
exec "$PYTHON" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist worksteal tests "$@"
