#!/usr/bin/env bash
# The test command: installs what it needs (./.venv), then runs the whole suite on CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
exec "$PYTHON" -m pytest -q tests "$@"
