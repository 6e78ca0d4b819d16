#!/usr/bin/env bash
# Install streamrec into .venv at the repository root (idempotent, quick when nothing changed).
# Picks exactly one ONNX runtime: onnxruntime-gpu where an NVIDIA GPU answers, onnxruntime elsewhere.
# Resolves the embedded Apache Kafka broker's jars (infra/kafka/pom.xml) with Maven into .kafka/.
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

# The broker: Apache Kafka's jars from Maven Central, pinned in infra/kafka/pom.xml; a second run does nothing.
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' infra/kafka/pom.xml)
kafka_libs=.kafka/$kafka_version/libs
kafka_want=$(sha256sum infra/kafka/pom.xml | cut -c1-16)
if [ ! -f "$kafka_libs/.resolved" ] || [ "$(cat "$kafka_libs/.resolved")" != "$kafka_want" ]; then
  command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
    || { echo "the embedded Kafka broker needs Java 17+: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)" >&2; exit 1; }
  command -v mvn >/dev/null 2>&1 \
    || { echo "resolving the Kafka broker's jars needs Maven: apt-get install maven" >&2; exit 1; }
  rm -rf "$kafka_libs"
  mvn -B -q -f infra/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$kafka_libs"
  echo "$kafka_want" > "$kafka_libs/.resolved"
  echo "resolved Apache Kafka $kafka_version into $kafka_libs ($(ls "$kafka_libs" | wc -l) jars)"
fi

# The gateway's browser libraries (uPlot for the monitoring page's charts, Swagger UI for the
# API docs): pinned by stream/gateway/web/package-lock.json, installed with npm into the
# git-ignored stream/gateway/web/node_modules, which the gateway serves itself (no CDN at run
# time). Install scripts are not run. A second run does nothing.
web=stream/gateway/web
web_want=$(cat "$web/package.json" "$web/package-lock.json" | sha256sum | cut -c1-16)
if [ ! -f "$web/node_modules/.streamrec-installed" ] || [ "$(cat "$web/node_modules/.streamrec-installed")" != "$web_want" ]; then
  command -v npm >/dev/null 2>&1 \
    || { echo "the gateway's pages need npm to install their chart library: apt-get install npm (or Node.js with npm)" >&2; exit 1; }
  npm ci --prefix "$web" --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$web_want" > "$web/node_modules/.streamrec-installed"
  echo "installed the gateway's browser libraries into $web/node_modules"
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
.venv/bin/python -m pip install -q -e ".[$ort,tools,test]"
echo "$want" > "$stamp"
echo "installed streamrec into .venv (onnx runtime: $ort)"
