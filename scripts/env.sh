# Shared settings for the local stack (sourced by the other scripts and by .ci/run).
# Every value can be overridden from the environment; none of them is a production secret.
: "${TK_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${TK_VENV:=$TK_ROOT/.venv}"
: "${TK_STATE_DIR:=$TK_ROOT/.local}"          # ignored: data, logs, pid files of local services
: "${NEO4J_HOME_DIR:=$TK_STATE_DIR/neo4j}"
: "${NEO4J_BOLT_HOST:=127.0.0.1}"
: "${NEO4J_BOLT_PORT:=7687}"
: "${NEO4J_PASSWORD:=tk-local-password}"
: "${NEO4J_PAGECACHE_MB:=256}"
: "${NEO4J_HEAP:=1g}"
: "${TK_REPLAY_PORT:=8765}"
: "${TK_AIRFLOW_HOST:=127.0.0.1}"              # make run's api-server: loopback (the demo login is admin/admin)
: "${TK_CHECKPOINT_BASE:=$TK_STATE_DIR/checkpoints}"
if [ -z "${AIRFLOW_CONN_NEO4J_DEFAULT:-}" ]; then  # the Airflow connection neo4j_default, JSON form
  AIRFLOW_CONN_NEO4J_DEFAULT=$(printf '{"conn_type":"neo4j","host":"%s","port":%s,"login":"neo4j","password":"%s"}' \
    "$NEO4J_BOLT_HOST" "$NEO4J_BOLT_PORT" "$NEO4J_PASSWORD")
fi
export TK_ROOT TK_VENV TK_STATE_DIR NEO4J_HOME_DIR NEO4J_BOLT_HOST NEO4J_BOLT_PORT NEO4J_PASSWORD \
       NEO4J_PAGECACHE_MB NEO4J_HEAP TK_REPLAY_PORT TK_AIRFLOW_HOST TK_CHECKPOINT_BASE AIRFLOW_CONN_NEO4J_DEFAULT
