#!/usr/bin/env bash
# Create ./.venv (once) and install the project with its dependencies into it.
# Sourced by scripts/quickstart.sh and scripts/run_tests.sh; safe to run again (it is a no-op when up to date).
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU wheel on the project's machines).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.installed-$(cat "$ROOT/setup.py" | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
  echo "[setup] creating $VENV and installing the project (first run only) ..."
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # torch is pinned in the same command as deepspeed, so pip never resolves a multi-GB CUDA build.
  "$VENV/bin/pip" install --disable-pip-version-check -q "$TORCH_SPEC" "deepspeed==0.19.8" -e "$ROOT[test]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
# One JIT-extension cache per venv: DeepSpeed builds its CPU comm op on first use, and a cache shared with
# other environments is rebuilt for each of them (and a build killed half-way leaves a lock that hangs runs).
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$VENV/torch_extensions}"
PYTHON="$VENV/bin/python"
