#!/usr/bin/env bash
# Installs the peer frameworks of benchmarks/frameworks_bench.py, each into its own venv under
# ~/.cache/q3agent/peers/<name> (or $Q3AGENT_PEERS_DIR/<name>): their pins clash (openai,
# pydantic, httpx majors), and none of them may leak into q3agent's own environment.
#
#   bash benchmarks/peers_setup.sh           # install what is missing, reuse what imports
#   bash benchmarks/peers_setup.sh --check   # exit 0 when every peer imports; installs nothing
#   bash benchmarks/peers_setup.sh --upgrade # reinstall the latest releases on the index
#
# Each peer gets the install its own docs give for talking to an OpenAI-compatible server:
#   pydantic-ai   pip install "pydantic-ai-slim[openai]"
#   openai-agents pip install openai-agents
#   qwen-agent    pip install qwen-agent python-dateutil numpy soundfile tqdm   (the minimal install misses these four,
#                 which `qwen_agent.agents` imports)
#   smolagents    pip install "smolagents[openai]"
# $Q3AGENT_PEERS_PYTHON picks the Python for new venvs (default: python3).
set -euo pipefail

dir="${Q3AGENT_PEERS_DIR:-$HOME/.cache/q3agent/peers}"
python="${Q3AGENT_PEERS_PYTHON:-python3}"
mode="${1:-install}"

declare -A packages=(
  [pydantic-ai]='pydantic-ai-slim[openai]'
  [openai-agents]='openai-agents'
  [qwen-agent]='qwen-agent python-dateutil numpy soundfile tqdm'
  [smolagents]='smolagents[openai]'
)
declare -A probes=(
  [pydantic-ai]='from pydantic_ai import Agent; from pydantic_ai.models.openai import OpenAIChatModel'
  [openai-agents]='from agents import Agent, Runner, OpenAIChatCompletionsModel'
  [qwen-agent]='from qwen_agent.agents import Assistant; from qwen_agent.tools.base import BaseTool'
  [smolagents]='from smolagents import ToolCallingAgent, OpenAIServerModel'
)

status=0
for name in pydantic-ai openai-agents qwen-agent smolagents; do
  venv="$dir/$name"
  if [[ "$mode" != "--upgrade" ]] && [[ -x "$venv/bin/python" ]] \
      && "$venv/bin/python" -c "${probes[$name]}" >/dev/null 2>&1; then
    echo "$name: ready in $venv"
    continue
  fi
  if [[ "$mode" == "--check" ]]; then
    echo "$name: missing or broken in $venv (run bash benchmarks/peers_setup.sh)"
    status=1
    continue
  fi
  echo "$name: installing into $venv"
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --upgrade ${packages[$name]}
  if ! "$venv/bin/python" -c "${probes[$name]}"; then
    echo "$name: installed but does not import (see the error above)" >&2
    status=1
  fi
done
exit $status
