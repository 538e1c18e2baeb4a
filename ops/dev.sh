#!/usr/bin/env bash
# ops/dev.sh: the project's one set-up script, used by developers and by CI (.ci/run).
#
#   ops/dev.sh run  [args...]          dev stack in the foreground: `emporium run args...`
#   ops/dev.sh test [pytest args...]   the test suite: `python -m pytest args...`
#
# Both modes:
#   1. .venv: created if missing (installs python3-venv with apt if needed). When uv.lock or
#      pyproject.toml changed since the last install (sha256 kept in .venv/.emporium-installed):
#      uv (pinned, UV_VERSION) is installed with pip, then `uv sync --locked` installs exactly the
#      locked versions of the runtime, test and embedded sets and the project itself (editable),
#      without resolving anything; it stops if uv.lock no longer matches pyproject.toml.
#   2. RabbitMQ: RABBITMQ_URL set: used as is. Otherwise a server answering on 127.0.0.1:5672 is
#      reused. Otherwise Debian's rabbitmq-server is installed (apt) if missing, the plugins
#      rabbitmq_management, rabbitmq_prometheus and rabbitmq_consistent_hash_exchange enabled and
#      the node started; it is stopped again on exit.
#   3. MongoDB: MONGODB_URL set: used as is. Otherwise a server answering on 127.0.0.1:27017 is
#      reused. Otherwise the embedded SecantusDB (.venv/bin/secantusd-py, data in .data/mongo, log
#      in .data/mongo.log) is started; it is stopped again on exit.
#   4. RABBITMQ_URL, RABBITMQ_MANAGEMENT_URL and MONGODB_URL are exported (defaults for unset ones).
#   5. On exit (normal, error, INT, TERM, HUP) exactly what this script started is stopped.
#   6. test only: Chromium for the browser tests (Playwright drives Debian's package; Playwright's own
#      browser download is never used). Installed with apt (package chromium) when neither
#      chromium nor chromium-browser is on PATH. And the official AsyncAPI CLI, which validates
#      edge/asyncapi.json (@asyncapi/cli, pinned in package.json and package-lock.json): installed
#      with `npm ci` into node_modules only when node_modules/.bin/asyncapi is missing or
#      package-lock.json changed since the last install (sha256 kept in
#      node_modules/.emporium-installed); nodejs and npm are installed with apt when npm is not on PATH.
#      And Debian's prometheus package (prometheus and promtool), installed with apt when missing:
#      the alert rules and configs are checked by promtool, the dashboards against a live server.
#   7. run only: Prometheus. When Debian's `prometheus` binary is on PATH (apt-get install prometheus;
#      not installed by this script) and nothing listens on 127.0.0.1:9090, it is started with
#      ops/prometheus/prometheus.yml (scraping emporium on :8000 and RabbitMQ on :15692; data in
#      .data/prometheus, log in .data/prometheus.log) and stopped again on exit. A Prometheus already
#      listening there is left alone; without the binary the run goes on without one.
#
# Internal knobs, for testing this script only (the defaults are what everything else assumes):
#   EMPORIUM_RABBITMQ_PORT (5672), EMPORIUM_RABBITMQ_MGMT_PORT (15672),
#   EMPORIUM_EMBEDDED_MONGO_PORT (27017), EMPORIUM_PYTHON (python interpreter for the venv).
set -euo pipefail

AMQP_PORT="${EMPORIUM_RABBITMQ_PORT:-5672}"
MGMT_PORT="${EMPORIUM_RABBITMQ_MGMT_PORT:-15672}"
MONGO_PORT="${EMPORIUM_EMBEDDED_MONGO_PORT:-27017}"
RABBIT_PLUGINS=(rabbitmq_management rabbitmq_prometheus rabbitmq_consistent_hash_exchange)
UV_VERSION=0.13.9         # installs the venv from uv.lock; the same version as locked (tests/unit/test_lockfile.py)
RABBIT_START_TIMEOUT=60   # seconds for the node to boot and its management API to answer
MONGO_START_TIMEOUT=30    # seconds for the embedded SecantusDB to answer
MONGO_STOP_TIMEOUT=15     # seconds between TERM and KILL for the embedded SecantusDB
PROM_ADDR=127.0.0.1:9090  # where `ops/dev.sh run` serves Prometheus
PROM_START_TIMEOUT=30     # seconds for Prometheus to answer
PROM_STOP_TIMEOUT=15      # seconds between TERM and KILL for Prometheus (it flushes its head block)

# State used by the EXIT trap: only what this script started is stopped.
MODE=""
CHILD_PID=""              # emporium run / pytest
MONGO_PID=""              # embedded SecantusDB started by this script
PROM_PID=""               # Prometheus started by this script
PROM_URL=""               # the Prometheus the dev stack runs with (started or reused), if any
RABBIT_STARTED=0          # 1 when this script started the RabbitMQ node
APT_UPDATED=0

# Progress goes to fd 3, a copy of the script's stderr made in main: a trap that fires while a
# command with redirected output runs (e.g. `rabbitmqctl ... >>log`) inherits that redirection,
# and its messages would otherwise land in the log file.
log() { printf '%s\n' "$*" >&3 2>/dev/null || printf '%s\n' "$*" >&2 2>/dev/null || true; }
die() { log "dev.sh: error: $*"; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: ops/dev.sh run [args...]          start the dev stack, then `emporium run args...`
       ops/dev.sh test [pytest args...]  start what the tests need, then `python -m pytest args...`
Environment: RABBITMQ_URL, RABBITMQ_MANAGEMENT_URL, MONGODB_URL point at existing servers.
EOF
}

# Runs a command as root: directly when root, through sudo otherwise. fd 3 is closed for it, so
# that daemons it may start (epmd, a service started by apt) do not hold our stderr open.
as_root() {
  if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
    "$@" 3>&-
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@" 3>&-
  else
    die "root is needed for: $* (run as root or install sudo)"
  fi
}

# apt-get install -y PACKAGES (apt-get update once first). Output goes to .data/apt.log and is
# shown when apt fails. Returns non-zero on failure (callers decide).
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "dev.sh: apt-get not found; install $* by hand"; return 1; }
  mkdir -p .data
  if (( ! APT_UPDATED )); then
    log "apt: apt-get update"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >.data/apt.log 2>&1; then
      tail -n 20 .data/apt.log >&3; return 1
    fi
    APT_UPDATED=1
  fi
  log "apt: apt-get install -y $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null >>.data/apt.log 2>&1; then
    tail -n 20 .data/apt.log >&3; return 1
  fi
}

# True when something accepts TCP connections on HOST PORT (1 s timeout).
port_open() {
  # shellcheck disable=SC2016  # $1/$2 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

now() { date +%s; }

# ---------------------------------------------------------------------------------------------
# 1. Python virtual environment
# ---------------------------------------------------------------------------------------------
py_ok() {  # PYTHON: true when it runs and is >= 3.11
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

find_python() {
  local c
  for c in "${EMPORIUM_PYTHON:-}" python3 python3.14 python3.13 python3.12 python3.11 python; do
    if [[ -z $c ]] || ! command -v "$c" >/dev/null 2>&1; then continue; fi
    if py_ok "$c"; then command -v "$c"; return 0; fi
  done
  return 1
}

setup_venv() {
  local py ver want have
  py=$(find_python) || die "Python >= 3.11 is required (python3 is $(python3 --version 2>&1 || echo 'missing')). Install it, or set EMPORIUM_PYTHON=/path/to/python3.11+"
  if [[ -e .venv && ! -x .venv/bin/python ]] || { [[ -x .venv/bin/python ]] && ! py_ok .venv/bin/python; }; then
    log "venv: .venv is broken or older than Python 3.11; recreating it"
    rm -rf .venv
  fi
  if [[ ! -x .venv/bin/python ]]; then
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    log "venv: creating .venv with $py ($ver)"
    mkdir -p .data
    if ! "$py" -m venv .venv >.data/venv.log 2>&1; then
      rm -rf .venv
      log "venv: '$py -m venv' failed (ensurepip/venv missing?); installing python${ver}-venv with apt"
      apt_install "python${ver}-venv" || apt_install python3-venv \
        || { cat .data/venv.log >&3; die "could not install python3-venv"; }
      "$py" -m venv .venv || { rm -rf .venv; die "'$py -m venv .venv' failed"; }
    fi
  fi
  want=$(cat pyproject.toml uv.lock | sha256sum | cut -d' ' -f1)
  have=$(cat .venv/.emporium-installed 2>/dev/null || true)
  if [[ $want != "$have" ]]; then
    log "venv: uv.lock or pyproject.toml changed since the last install: uv sync --locked --extra test --extra embedded"
    rm -f .venv/.emporium-installed
    .venv/bin/python -m pip install -q --disable-pip-version-check "uv==${UV_VERSION}" \
      || die "pip install uv==${UV_VERSION} failed"
    # .venv is this script's (made with the machine's Python above): uv must neither replace it
    # nor fetch a Python of its own.
    UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --quiet --locked --no-python-downloads \
      --python .venv/bin/python --extra test --extra embedded \
      || die "uv sync --locked failed (if uv.lock is out of date with pyproject.toml: .venv/bin/uv lock)"
    printf '%s\n' "$want" >.venv/.emporium-installed
  else
    log "venv: .venv is up to date"
  fi
}

# ---------------------------------------------------------------------------------------------
# 2. RabbitMQ
# ---------------------------------------------------------------------------------------------
# Management API check. Exit 0: answers and the consistent-hash exchange and the Prometheus
# listener are there; 2: answers but prints what is missing; 1: does not answer.
mgmt_check() {
  .venv/bin/python - "http://127.0.0.1:${MGMT_PORT}/api/overview" <<'EOF'
import base64, json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={
    "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
try:
    with opener.open(req, timeout=2) as resp:
        overview = json.load(resp)
except Exception:
    sys.exit(1)
missing = []
if "x-consistent-hash" not in {e.get("name") for e in overview.get("exchange_types", [])}:
    missing.append("rabbitmq_consistent_hash_exchange")
if "http/prometheus" not in {l.get("protocol") for l in overview.get("listeners", [])}:
    missing.append("rabbitmq_prometheus")
if missing:
    print(" ".join(missing))
    sys.exit(2)
EOF
}

# Polls the management API until it answers with all plugins or SECONDS pass.
wait_mgmt() {
  local deadline=$(( $(now) + $1 )) rc
  while :; do
    rc=0; mgmt_check >/dev/null || rc=$?
    (( rc == 0 )) && return 0
    (( $(now) >= deadline )) && return "$rc"
    sleep 0.5
  done
}

wait_port() {  # PORT SECONDS
  local deadline=$(( $(now) + $2 ))
  until port_open 127.0.0.1 "$1"; do
    (( $(now) >= deadline )) && return 1
    sleep 0.2
  done
}

# The node answers: make sure the plugins are enabled (online) and the management API answers.
rabbit_ensure_plugins() {
  local rc=0 missing
  missing=$(mgmt_check) || rc=$?
  (( rc == 0 )) && return 0
  if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
    log "rabbitmq: WARNING: management API on :${MGMT_PORT} does not answer or lacks plugins (${missing:-management}), and rabbitmq-plugins is not installed here"
    return 0
  fi
  log "rabbitmq: enabling plugins ${RABBIT_PLUGINS[*]}"
  mkdir -p .data
  if ! as_root timeout 60 rabbitmq-plugins -q enable "${RABBIT_PLUGINS[@]}" </dev/null >>.data/rabbitmq.log 2>&1; then
    tail -n 20 .data/rabbitmq.log >&3
    log "rabbitmq: WARNING: rabbitmq-plugins enable failed; integration tests may fail"
    return 0
  fi
  wait_mgmt "$RABBIT_START_TIMEOUT" \
    || log "rabbitmq: WARNING: management API http://127.0.0.1:${MGMT_PORT}/api/overview not ready after ${RABBIT_START_TIMEOUT}s"
}

setup_rabbitmq() {
  local deadline
  if [[ -n ${RABBITMQ_URL:-} ]]; then
    log "rabbitmq: using RABBITMQ_URL from the environment"
    return 0
  fi
  if port_open 127.0.0.1 "$AMQP_PORT"; then
    log "rabbitmq: reusing 127.0.0.1:${AMQP_PORT}"
    rabbit_ensure_plugins
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "rabbitmq: rabbitmq-server not found; installing it with apt"
    apt_install rabbitmq-server || die "apt-get install rabbitmq-server failed"
    hash -r
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server still not on PATH after install"
  fi
  # The package may have started the node as a service (or it is still booting): leave it to
  # the system, only make sure the plugins are enabled.
  mkdir -p .data
  if port_open 127.0.0.1 "$AMQP_PORT" \
     || as_root timeout 30 rabbitmq-diagnostics -q ping </dev/null >>.data/rabbitmq.log 2>&1; then
    log "rabbitmq: a node is already running as a service; waiting for 127.0.0.1:${AMQP_PORT}"
    wait_port "$AMQP_PORT" "$RABBIT_START_TIMEOUT" || die "RabbitMQ node runs but 127.0.0.1:${AMQP_PORT} does not answer"
    log "rabbitmq: reusing 127.0.0.1:${AMQP_PORT}"
    rabbit_ensure_plugins
    return 0
  fi
  log "rabbitmq: starting rabbitmq-server (plugins: ${RABBIT_PLUGINS[*]})"
  as_root rabbitmq-plugins -q enable --offline "${RABBIT_PLUGINS[@]}" </dev/null >>.data/rabbitmq.log 2>&1 \
    || { tail -n 20 .data/rabbitmq.log >&3; die "rabbitmq-plugins enable --offline failed"; }
  RABBIT_STARTED=1
  as_root rabbitmq-server -detached </dev/null >>.data/rabbitmq.log 2>&1 \
    || { tail -n 20 .data/rabbitmq.log >&3; die "rabbitmq-server -detached failed"; }
  deadline=$(( $(now) + RABBIT_START_TIMEOUT ))
  until as_root timeout "$RABBIT_START_TIMEOUT" rabbitmqctl -q await_startup </dev/null >>.data/rabbitmq.log 2>&1; do
    if (( $(now) >= deadline )); then
      tail -n 20 .data/rabbitmq.log >&3
      die "RabbitMQ did not start within ${RABBIT_START_TIMEOUT}s (logs: /var/log/rabbitmq/)"
    fi
    sleep 0.5
  done
  wait_port "$AMQP_PORT" $(( deadline - $(now) > 5 ? deadline - $(now) : 5 )) \
    || die "RabbitMQ started but 127.0.0.1:${AMQP_PORT} does not answer"
  wait_mgmt $(( deadline - $(now) > 10 ? deadline - $(now) : 10 )) \
    || die "RabbitMQ management API http://127.0.0.1:${MGMT_PORT}/api/overview not ready (or plugins missing)"
  log "rabbitmq: started (127.0.0.1:${AMQP_PORT}, UI http://127.0.0.1:${MGMT_PORT})"
}

# ---------------------------------------------------------------------------------------------
# 3. MongoDB
# ---------------------------------------------------------------------------------------------
setup_mongodb() {
  local deadline
  if [[ -n ${MONGODB_URL:-} ]]; then
    log "mongodb: using MONGODB_URL from the environment"
    return 0
  fi
  if port_open 127.0.0.1 "$MONGO_PORT"; then
    log "mongodb: reusing 127.0.0.1:${MONGO_PORT}"
    return 0
  fi
  [[ -x .venv/bin/secantusd-py ]] \
    || die ".venv/bin/secantusd-py missing (secantusdb comes with the embedded extra); delete .venv/.emporium-installed and retry"
  mkdir -p .data/mongo
  # Own session: a Ctrl-C in the terminal must not reach it before emporium has shut down.
  (
    trap - INT QUIT
    if command -v setsid >/dev/null 2>&1; then set -- setsid; else set --; fi
    # Durable commits, abandoned transactions reaped in seconds: see ops/embedded_mongodb.py.
    exec "$@" .venv/bin/python -m ops.embedded_mongodb --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$PWD/.data/mongo"
  ) </dev/null >.data/mongo.log 2>&1 3>&- &
  MONGO_PID=$!
  deadline=$(( $(now) + MONGO_START_TIMEOUT ))
  until port_open 127.0.0.1 "$MONGO_PORT"; do
    if ! kill -0 "$MONGO_PID" 2>/dev/null; then
      tail -n 30 .data/mongo.log >&3
      MONGO_PID=""
      die "embedded SecantusDB exited during start-up (log: .data/mongo.log)"
    fi
    if (( $(now) >= deadline )); then
      tail -n 30 .data/mongo.log >&3
      die "embedded SecantusDB did not answer on 127.0.0.1:${MONGO_PORT} within ${MONGO_START_TIMEOUT}s (log: .data/mongo.log)"
    fi
    sleep 0.2
  done
  log "mongodb: started embedded SecantusDB (pid ${MONGO_PID}, 127.0.0.1:${MONGO_PORT}, data .data/mongo, log .data/mongo.log)"
}

# ---------------------------------------------------------------------------------------------
# 6. Prometheus (run only, optional)
# ---------------------------------------------------------------------------------------------
setup_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then return; fi
  log "chromium: not found; installing it with apt (the browser tests drive it)"
  apt_install chromium || die "apt-get install chromium failed (the browser tests need it)"
}

setup_prometheus_binary() {
  # The dashboards' live test and promtool's checks of the rules and configs need Debian's
  # prometheus package; the test starts its own server on a free port.
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then return; fi
  log "prometheus: not found; installing it with apt (the dashboard and alert-rule tests run it)"
  apt_install prometheus || die "apt-get install prometheus failed (the dashboard tests need it)"
}

setup_asyncapi_cli() {
  local want have
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  have=$(cat node_modules/.emporium-installed 2>/dev/null || true)
  if [[ -x node_modules/.bin/asyncapi && $want == "$have" ]]; then
    log "asyncapi: node_modules is up to date"
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "asyncapi: npm not found; installing nodejs and npm with apt (the AsyncAPI test runs the official CLI)"
    apt_install nodejs npm || die "apt-get install nodejs npm failed (the AsyncAPI test needs them)"
    hash -r
  fi
  log "asyncapi: node_modules missing or package-lock.json changed: npm ci"
  mkdir -p .data
  # --ignore-scripts: the CLI runs without its packages' install scripts, which would only edit
  # shell start-up files (autocompletion) and report the installation to an analytics service.
  if ! npm ci --no-audit --no-fund --ignore-scripts </dev/null >.data/npm.log 2>&1; then
    tail -n 20 .data/npm.log >&3
    die "npm ci failed (log: .data/npm.log)"
  fi
  printf '%s\n' "$want" >node_modules/.emporium-installed
}

setup_prometheus() {
  local deadline
  if ! command -v prometheus >/dev/null 2>&1; then
    log "prometheus: not installed (Debian: apt-get install prometheus); running without it"
    return 0
  fi
  if port_open "${PROM_ADDR%:*}" "${PROM_ADDR##*:}"; then
    log "prometheus: something already listens on ${PROM_ADDR}; leaving it alone (scrape config for emporium: ops/prometheus/prometheus.yml)"
    PROM_URL="http://${PROM_ADDR}"
    return 0
  fi
  mkdir -p .data/prometheus
  # Own session, like SecantusDB: a Ctrl-C in the terminal must not reach it before emporium stops.
  (
    trap - INT QUIT
    if command -v setsid >/dev/null 2>&1; then set -- setsid; else set --; fi
    exec "$@" prometheus --config.file="$PWD/ops/prometheus/prometheus.yml" \
      --storage.tsdb.path="$PWD/.data/prometheus" --web.listen-address="$PROM_ADDR"
  ) </dev/null >.data/prometheus.log 2>&1 3>&- &
  PROM_PID=$!
  deadline=$(( $(now) + PROM_START_TIMEOUT ))
  until port_open "${PROM_ADDR%:*}" "${PROM_ADDR##*:}"; do
    if ! kill -0 "$PROM_PID" 2>/dev/null; then
      tail -n 20 .data/prometheus.log >&3
      PROM_PID=""
      log "prometheus: WARNING: exited during start-up (log: .data/prometheus.log); running without it"
      return 0
    fi
    if (( $(now) >= deadline )); then
      tail -n 20 .data/prometheus.log >&3
      log "prometheus: WARNING: did not answer on ${PROM_ADDR} within ${PROM_START_TIMEOUT}s (log: .data/prometheus.log)"
      return 0
    fi
    sleep 0.2
  done
  PROM_URL="http://${PROM_ADDR}"
  log "prometheus: started (pid ${PROM_PID}, ${PROM_URL}, data .data/prometheus, log .data/prometheus.log)"
}

# ---------------------------------------------------------------------------------------------
# 5. Clean-up and signals
# ---------------------------------------------------------------------------------------------
stop_pid() {  # PID SECONDS: TERM, wait up to SECONDS, then KILL. Prints how it ended.
  local pid=$1 deadline=$(( $(now) + $2 ))
  kill -TERM "$pid" 2>/dev/null || { echo "already gone"; return 0; }
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(now) >= deadline )); then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      echo "killed after ${2}s"; return 0
    fi
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
  echo "stopped"
}

cleanup() {
  local rc=$? how
  trap '' INT TERM HUP      # let the clean-up finish
  trap - EXIT
  set +e
  if [[ -n $CHILD_PID ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
    how=$(stop_pid "$CHILD_PID" 15)
    log "${MODE}: ${how} (pid ${CHILD_PID})"
  fi
  if [[ -n $PROM_PID ]]; then
    how=$(stop_pid "$PROM_PID" "$PROM_STOP_TIMEOUT")
    log "prometheus: ${how} (pid ${PROM_PID})"
  fi
  if [[ -n $MONGO_PID ]]; then
    how=$(stop_pid "$MONGO_PID" "$MONGO_STOP_TIMEOUT")
    log "mongodb: embedded SecantusDB ${how} (pid ${MONGO_PID})"
  fi
  if (( RABBIT_STARTED )); then
    if as_root timeout 60 rabbitmqctl -q shutdown </dev/null >>.data/rabbitmq.log 2>&1; then
      log "rabbitmq: stopped the node this script started (rabbitmqctl shutdown)"
    else
      log "rabbitmq: WARNING: 'rabbitmqctl shutdown' failed; the node may still run"
    fi
  fi
  exit "$rc"
}

has_tty() { { : >/dev/tty; } 2>/dev/null; }

on_signal() {  # SIGNAL NUMBER
  local sig=$1 fwd
  if [[ -z $CHILD_PID ]] || ! kill -0 "$CHILD_PID" 2>/dev/null; then
    log "dev.sh: got SIG${sig}, stopping"
    exit $(( 128 + $2 ))
  fi
  if [[ $MODE == run ]]; then
    # emporium runs in its own session: the terminal's Ctrl-C reaches only this script, so
    # forward exactly one signal to its process group, then keep waiting for it to exit.
    fwd=$sig; [[ $sig == HUP ]] && fwd=TERM
    log "dev.sh: got SIG${sig}; forwarding SIG${fwd} to emporium (pid ${CHILD_PID}) and waiting for it to exit"
    kill -s "$fwd" -- "-$CHILD_PID" 2>/dev/null || kill -s "$fwd" "$CHILD_PID" 2>/dev/null || true
  else
    # pytest shares the terminal's process group (so --pdb works): a Ctrl-C already reached it.
    # Otherwise send it SIGINT, which lets pytest tear its fixtures down.
    if [[ $sig == INT ]] && has_tty; then
      log "dev.sh: got SIGINT; waiting for pytest to exit"
    else
      log "dev.sh: got SIG${sig}; sending SIGINT to pytest (pid ${CHILD_PID}) and waiting for it to exit"
      kill -s INT "$CHILD_PID" 2>/dev/null || true
    fi
  fi
}

# Runs "$@" in the background, forwarding signals (see on_signal), and returns its exit status.
run_child() {
  local rc r
  if [[ $MODE == run ]]; then
    (
      trap - INT QUIT
      if command -v setsid >/dev/null 2>&1; then exec setsid "$@"; else exec "$@"; fi
    ) 3>&- &
  else
    ( trap - INT QUIT; exec "$@" ) <&0 3>&- &
  fi
  CHILD_PID=$!
  while :; do
    rc=0; wait "$CHILD_PID" || rc=$?
    if (( rc > 128 )); then
      # wait was interrupted by a trapped signal, or the child died of a signal.
      if kill -0 "$CHILD_PID" 2>/dev/null; then continue; fi
      # It has exited: a second wait gives its real status (127: bash no longer knows it).
      r=0; wait "$CHILD_PID" 2>/dev/null || r=$?
      if (( r != 127 )); then rc=$r; fi
    fi
    break
  done
  CHILD_PID=""
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
main() {
  MODE="${1:-}"
  case $MODE in
    run|test) shift ;;
    -h|--help|help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
  exec 3>&2
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

  trap cleanup EXIT
  trap 'on_signal INT 2' INT
  trap 'on_signal TERM 15' TERM
  trap 'on_signal HUP 1' HUP

  if [[ $MODE == run ]] && port_open 127.0.0.1 8000; then
    # Its actors would consume beside the running ones for a moment, then its edge fail to bind.
    die "something already listens on 127.0.0.1:8000 (another ops/dev.sh run?): stop it first"
  fi
  setup_venv
  setup_rabbitmq
  setup_mongodb
  if [[ $MODE == run ]]; then setup_prometheus; else setup_chromium; setup_prometheus_binary; setup_asyncapi_cli; fi

  export RABBITMQ_URL="${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:${AMQP_PORT}/}"
  export RABBITMQ_MANAGEMENT_URL="${RABBITMQ_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:${MGMT_PORT}}"
  export MONGODB_URL="${MONGODB_URL:-mongodb://127.0.0.1:${MONGO_PORT}/?directConnection=true}"

  local rc=0
  if [[ $MODE == run ]]; then
    log "emporium: edge API docs  http://127.0.0.1:8000/docs"
    log "emporium: RabbitMQ UI    http://127.0.0.1:${MGMT_PORT}  (guest/guest)"
    log "emporium: metrics        http://127.0.0.1:8000/metrics"
    if [[ -n $PROM_URL ]]; then log "emporium: Prometheus     ${PROM_URL}  (alert rules: ${PROM_URL}/api/v1/rules?type=alert)"; fi
    log "emporium: Ctrl-C stops emporium, then the servers this script started"
    run_child .venv/bin/emporium run "$@" || rc=$?
  else
    run_child .venv/bin/python -m pytest "$@" || rc=$?
  fi
  exit "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
