#!/usr/bin/env bash
# Install streamrec into .venv at the repository root (idempotent, quick when nothing changed).
# Picks exactly one ONNX runtime: onnxruntime-gpu where an NVIDIA GPU answers, onnxruntime elsewhere.
# Usage: bash infra/install.sh            (STREAMREC_ORT=cpu|gpu forces the choice)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "streamrec needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2; exit 1; }

if [ -n "${STREAMREC_ORT:-}" ]; then
  ort=$STREAMREC_ORT
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ort=gpu
else
  ort=cpu
fi

stamp=.venv/.installed
want="$(cat pyproject.toml infra/install.sh | sha256sum | cut -c1-16)-$ort"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Never both: they write the same package. Remove the other one if a previous install put it there.
other=$([ "$ort" = gpu ] && echo onnxruntime || echo onnxruntime-gpu)
.venv/bin/python -m pip uninstall -q -y "$other" 2>/dev/null || true
# torch first and exactly pinned: a looser spec pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[$ort,test]"
echo "$want" > "$stamp"
echo "installed streamrec into .venv (onnx runtime: $ort)"
