#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine; safe to run again (does nothing when
# up to date). Python venv from the pinned constraints, the project itself (editable, with the
# tk-checkpoint command), and the Neo4j 5.26 server from Maven Central.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TK_ROOT"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "Installing system packages: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

stamp="$TK_VENV/.tk-installed"
if [ ! -x "$TK_VENV/bin/python" ]; then
  echo "Creating the virtualenv in $TK_VENV"
  python3 -m venv "$TK_VENV"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] \
   || [ pyproject.toml -nt "$stamp" ]; then
  echo "Installing Python packages (pinned by constraints.txt)..."
  "$TK_VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$TK_VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
  # the project itself, editable (setuptools' banner about editable installs says nothing new here)
  PYTHONWARNINGS=ignore "$TK_VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
bash scripts/neo4j.sh build
echo "Setup complete."
