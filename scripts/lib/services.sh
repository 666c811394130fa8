# Shared by scripts/test and scripts/stack: install and start the real services.
# Every function is idempotent: it does nothing when the service is already there.

log() { printf '[loopwatch scripts] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages the tests use, keyed by a command each provides.
#   promtool, prometheus     -> prometheus (2.42)
#   prometheus-alertmanager  -> prometheus-alertmanager (0.25)
#   dockerd, docker          -> docker.io
#   busybox                  -> busybox-static (the sandbox image's rootfs)
#   chromium                 -> chromium (the embedded dashboard in a real browser)
#   openssl, curl, chattr, pgrep -> openssl, curl, e2fsprogs, procps
#   ip, unshare              -> iproute2, util-linux (the fleet test's two hosts)
#   cc                       -> gcc, libc6-dev (builds the stand-in NVML of the GPU
#                               tests and bench)
ensure_packages() {
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
  # Clients and tools the tests call: TLS certificates and handshakes, HTTPS requests,
  # an unremovable container (chattr), process look-ups.
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v chattr >/dev/null || missing+=(e2fsprogs)
  command -v pgrep >/dev/null || missing+=(procps)
  # Two hosts on one machine for the fleet test: network namespaces and UTS namespaces.
  command -v ip >/dev/null || missing+=(iproute2)
  command -v unshare >/dev/null || missing+=(util-linux)
  # The stand-in NVML of the GPU tests and bench is a C library they build.
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The Debian packages start their own daemons under systemd where there is one;
  # the tests start private instances on free ports instead.
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  log "starting dockerd"
  # A daemon that died uncleanly leaves its pid file behind and the next refuses to start.
  if ! pgrep -x dockerd >/dev/null; then
    as_root rm -f /var/run/docker.pid
  fi
  as_root sh -c 'nohup dockerd >/tmp/loopwatch-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  log "dockerd did not come up; its log:"
  tail -n 40 /tmp/loopwatch-dockerd.log >&2 || true
  return 1
}

# The sandbox image: a busybox rootfs imported locally (there is no registry here).
# Bump the tag when the rootfs layout changes, so machines that have the old one rebuild.
SANDBOX_IMAGE="${LOOPWATCH_SANDBOX_IMAGE:-loopwatch-sandbox:1}"
export LOOPWATCH_SANDBOX_IMAGE="$SANDBOX_IMAGE"

ensure_sandbox_image() {
  if docker image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  log "building $SANDBOX_IMAGE from busybox-static"
  local rootfs
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/usr/lib" "$rootfs/usr/lib64" "$rootfs/loopwatch"
  # Host libraries are bind-mounted read-only at run time for dynamically linked
  # programs (the evolve example's back-test worker); these links find them.
  ln -s usr/lib "$rootfs/lib"
  ln -s usr/lib64 "$rootfs/lib64"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh sleep cat echo head dd yes true false kill env; do
    ln -s busybox "$rootfs/bin/$applet"
  done
  tar -C "$rootfs" -c . | docker import - "$SANDBOX_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# The Python side: a virtual environment (target/venv) with the real libraries the
# client's adapters and the zero-code instrumentation are tested against (and the LLM
# SDKs and OpenEvolve the metering proxy is tested with), type checking, and loopwatch
# itself installed the way users install it (`pip install .`: the CLI built by maturin
# beside the client; a dev build here, so it reuses the test build's artefacts).
LOOPWATCH_VENV="${LOOPWATCH_VENV:-$PWD/target/venv}"
export LOOPWATCH_TEST_PYTHON="$LOOPWATCH_VENV/bin/python"
# ShinkaEvolve pins its own openai (through instructor) below the one the proxy's tests
# use: it gets an environment of its own.
LOOPWATCH_SHINKA_VENV="${LOOPWATCH_SHINKA_VENV:-$PWD/target/venv-shinka}"
export LOOPWATCH_SHINKA_PYTHON="$LOOPWATCH_SHINKA_VENV/bin/python"
# A real Optuna older than the instrumentation's tested range, kept apart (pip
# --target) for the test that an untested version is left alone.
export LOOPWATCH_OUTSIDE_RANGE_DIR="$LOOPWATCH_VENV/outside-range"

# The frameworks the instrumentation is tested against, at the versions its tested
# ranges name (python/loopwatch/_instrument/__init__.py, FRAMEWORKS; docs/frameworks.md).
PYTHON_FRAMEWORK_PINS=(deap==1.4.4 optuna==5.1.0 nevergrad==1.0.12 openevolve==0.4.1)
SHINKA_PIN=shinka-evolve==0.0.7
OUTSIDE_RANGE_PIN=optuna==3.6.1

# Whether every `name==version` given is installed for the Python $1.
pins_installed() {
  local python=$1
  shift
  "$python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
}

ensure_python_env() {
  if [ ! -x "$LOOPWATCH_TEST_PYTHON" ]; then
    log "creating the Python test environment at $LOOPWATCH_VENV"
    python3 -m venv "$LOOPWATCH_VENV"
  fi
  local pip=("$LOOPWATCH_TEST_PYTHON" -m pip --disable-pip-version-check -q)
  if ! "$LOOPWATCH_TEST_PYTHON" -c "import prometheus_client, psutil, mypy, openai, anthropic" 2>/dev/null \
    || ! pins_installed "$LOOPWATCH_TEST_PYTHON" "${PYTHON_FRAMEWORK_PINS[@]}"; then
    log "installing prometheus_client, psutil, mypy, openai, anthropic and ${PYTHON_FRAMEWORK_PINS[*]} into the test environment"
    "${pip[@]}" install prometheus_client psutil mypy openai anthropic "${PYTHON_FRAMEWORK_PINS[@]}"
  fi
  if ! PYTHONPATH="$LOOPWATCH_OUTSIDE_RANGE_DIR" pins_installed "$LOOPWATCH_TEST_PYTHON" "$OUTSIDE_RANGE_PIN"; then
    log "installing $OUTSIDE_RANGE_PIN apart, at $LOOPWATCH_OUTSIDE_RANGE_DIR"
    rm -rf "$LOOPWATCH_OUTSIDE_RANGE_DIR"
    "${pip[@]}" install --no-deps --target "$LOOPWATCH_OUTSIDE_RANGE_DIR" "$OUTSIDE_RANGE_PIN"
  fi
  if [ ! -x "$LOOPWATCH_SHINKA_PYTHON" ]; then
    log "creating the ShinkaEvolve environment at $LOOPWATCH_SHINKA_VENV"
    python3 -m venv "$LOOPWATCH_SHINKA_VENV"
  fi
  if ! pins_installed "$LOOPWATCH_SHINKA_PYTHON" "$SHINKA_PIN"; then
    log "installing $SHINKA_PIN into its environment"
    "$LOOPWATCH_SHINKA_PYTHON" -m pip --disable-pip-version-check -q install "$SHINKA_PIN"
  fi
  log "pip install . (the loopwatch command and the Python client)"
  MATURIN_PEP517_ARGS="--profile dev" "${pip[@]}" install --force-reinstall --no-deps .
  "$LOOPWATCH_VENV/bin/loopwatch" --version >/dev/null
}
