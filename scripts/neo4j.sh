#!/usr/bin/env bash
# Build, start, stop a real Neo4j 5.26 community server from its Maven Central artifacts.
#   scripts/neo4j.sh build | start | stop | status | restart
# Data, log and pid file live in $NEO4J_HOME_DIR (default .local/neo4j, ignored by git).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SRC="$TK_ROOT/tools/neo4j"
PIDFILE="$NEO4J_HOME_DIR/neo4j.pid"
LOG="$NEO4J_HOME_DIR/neo4j.out"

build() {
  if [ ! -f "$SRC/target/classes/tk/neo4j/Server.class" ] || [ ! -d "$SRC/target/lib" ] \
     || [ "$SRC/pom.xml" -nt "$SRC/target/classes/tk/neo4j/Server.class" ] \
     || [ "$SRC/src/main/java/tk/neo4j/Server.java" -nt "$SRC/target/classes/tk/neo4j/Server.class" ]; then
    echo "Building the Neo4j launcher (Maven resolves Neo4j from Maven Central)..."
    # Maven's output (even with -q it prints terminal resets) goes to a log, shown when the build fails
    local build_log="$SRC/target/build.log"
    mkdir -p "$SRC/target"
    if ! (cd "$SRC" && mvn -q -B package -DskipTests) >"$build_log" 2>&1; then
      cat "$build_log" >&2
      echo "Building the Neo4j launcher failed (log: $build_log)" >&2
      return 1
    fi
  fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if running; then echo "Neo4j already running (pid $(cat "$PIDFILE")) on bolt://$NEO4J_BOLT_HOST:$NEO4J_BOLT_PORT"; return 0; fi
  build
  mkdir -p "$NEO4J_HOME_DIR"
  : > "$LOG"
  # setsid: its own session, so a terminal's Ctrl-C or the caller's exit does not take it down.
  setsid java -Xms256m "-Xmx$NEO4J_HEAP" -XX:+UseG1GC \
    -cp "$SRC/target/classes:$SRC/target/lib/*" tk.neo4j.Server >>"$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local t0=$SECONDS
  until grep -q '^READY' "$LOG"; do
    if ! running; then echo "Neo4j failed to start; last lines of $LOG:" >&2; tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; return 1; fi
    if (( SECONDS - t0 > 180 )); then echo "Neo4j did not become ready in 180 s (see $LOG)" >&2; stop; return 1; fi
    sleep 0.5
  done
  grep '^READY' "$LOG"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; echo "Neo4j not running"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then echo "Neo4j did not stop in 60 s; sending SIGKILL" >&2; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  echo "Neo4j stopped"
}

status() {
  if running; then echo "Neo4j running (pid $(cat "$PIDFILE")) on bolt://$NEO4J_BOLT_HOST:$NEO4J_BOLT_PORT"; else echo "Neo4j not running"; return 3; fi
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 build|start|stop|status|restart" >&2; exit 2 ;;
esac
