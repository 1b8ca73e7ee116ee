#!/usr/bin/env bash
# Installs the providers' own signing libraries that the webhook tests sign
# deliveries with, and the official MCP SDK that the mcp-proxy tests relay
# between, outside the repository, and prints where they are as shell
# exports:
#
#   eval "$(scripts/pyenv.sh)"
#
# Python packages (pinned in tests/webhooks/requirements.txt,
# tests/mcp/requirements.txt and tests/openapi/requirements.txt) go into a virtualenv under
# $AFORO_CACHE_DIR/venv; GitHub's JavaScript signer (pinned in
# tests/webhooks/package.json) under $AFORO_CACHE_DIR/node. Each is
# reinstalled only when its pin files change.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR=${AFORO_CACHE_DIR:-$HOME/.cache/aforo}
VENV="$CACHE_DIR/venv"
NODE_PREFIX="$CACHE_DIR/node"

log() { echo "pyenv: $*" >&2; }

apt_install() {
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

stamp_of() { sha256sum "$1" | cut -d' ' -f1; }

python_env() {
  local want
  want=$(cat tests/webhooks/requirements.txt tests/mcp/requirements.txt tests/openapi/requirements.txt | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.aforo-stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating a virtualenv in $VENV"
    python3 -m venv "$VENV" >&2 || { apt_install python3-venv && python3 -m venv "$VENV" >&2; }
  fi
  log "installing tests/webhooks/requirements.txt, tests/mcp/requirements.txt and tests/openapi/requirements.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    -r tests/webhooks/requirements.txt -r tests/mcp/requirements.txt \
    -r tests/openapi/requirements.txt >&2
  echo "$want" >"$VENV/.aforo-stamp"
}

node_env() {
  local want
  want=$(stamp_of tests/webhooks/package.json)
  if [ -d "$NODE_PREFIX/node_modules/@octokit/webhooks-methods" ] \
    && [ "$(cat "$NODE_PREFIX/.aforo-stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing tests/webhooks/package.json into $NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  cp tests/webhooks/package.json "$NODE_PREFIX/package.json"
  (cd "$NODE_PREFIX" && npm install --no-audit --no-fund --silent >&2)
  echo "$want" >"$NODE_PREFIX/.aforo-stamp"
}

python_env
node_env
echo "export AFORO_WEBHOOK_PYTHON=$VENV/bin/python"
echo "export AFORO_MCP_PYTHON=$VENV/bin/python"
echo "export AFORO_OPENAPI_PYTHON=$VENV/bin/python"
echo "export AFORO_WEBHOOK_NODE_PREFIX=$NODE_PREFIX"
