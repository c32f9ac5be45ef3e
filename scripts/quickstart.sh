#!/usr/bin/env bash
# The main job: installs what it needs (./.venv), then runs the CPU quickstart on the bundled corpus.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
exec bash examples_deepspeed/data_efficiency/quickstart_cpu.sh "$@"
