#!/usr/bin/env sh
# Calls through entra-proxy with a proxy key, both API shapes.
# Usage: PROXY=http://127.0.0.1:8080 KEY=ep-... ./examples/curl.sh
set -eu
PROXY=${PROXY:-http://127.0.0.1:8080}
: "${KEY:?set KEY to a key printed by 'entra-proxy keys new' or 'entra-proxy demo'}"

echo "# OpenAI style: model name mapped to a deployment"
curl -sS "$PROXY/v1/chat/completions" \
  -H "Authorization: Bearer $KEY" -H "content-type: application/json" \
  -d '{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}'
echo

echo "# Azure style: deployment in the path, api-key header, streamed"
curl -sSN "$PROXY/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \
  -H "api-key: $KEY" -H "content-type: application/json" \
  -d '{"messages":[{"role":"user","content":"Say hello"}],"stream":true}'
echo
