# Shared setup for scripts/demo, scripts/test and scripts/bench: a virtualenv with the locked
# requirements (hashes checked) and the `rostersync` command, and a clear word when the emulators'
# tools are missing. Source it, don't run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '%s\n' "$*" >&2; }

ensure_python() {
  PYTHON_BIN="${PYTHON:-}"
  if [ -z "$PYTHON_BIN" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN="$candidate"; break; fi
    done
  fi
  if [ -z "$PYTHON_BIN" ]; then
    say "error: Python 3.11 is needed (python3.11 or python3 on PATH)."
    exit 2
  fi
  if ! "$PYTHON_BIN" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    say "error: $PYTHON_BIN is $("$PYTHON_BIN" --version 2>&1); rostersync needs Python 3.11 or newer."
    exit 2
  fi
}

ensure_venv() {
  ensure_python
  if [ ! -x "$VENV/bin/python" ]; then
    say "==> creating the virtualenv in .venv"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local want have
  want="$(cat "$ROOT/requirements.txt" "$ROOT/functions/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  have="$(cat "$VENV/.requirements-sha256" 2>/dev/null || true)"
  if [ "$want" != "$have" ]; then
    # The lock (requirements.txt: the functions' pins, which are functions/requirements.txt's, and
    # the tools), every file checked against its hash; then this repository as the `rostersync`
    # command, editable, built with the locked setuptools (no unlocked build environment).
    say "==> installing the locked requirements into .venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$ROOT/requirements.txt"
    say "==> pip install -e . (the rostersync command)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
    echo "$want" > "$VENV/.requirements-sha256"
  fi
  export PATH="$VENV/bin:$PATH"
}

ensure_emulator_tools() {
  if ! command -v gcloud >/dev/null 2>&1; then
    say "error: gcloud is not on PATH. The Pub/Sub and Firestore emulators come with the Google Cloud SDK:"
    say "  install it (https://cloud.google.com/sdk/docs/install), then run"
    say "  gcloud components install beta pubsub-emulator cloud-firestore-emulator"
    say "  (with Debian's google-cloud-cli packages: google-cloud-cli-pubsub-emulator and"
    say "  google-cloud-cli-firestore-emulator)."
    exit 2
  fi
  if ! command -v java >/dev/null 2>&1; then
    say "error: java is not on PATH. The emulators need a Java 11+ runtime (e.g. apt-get install openjdk-17-jre-headless)."
    exit 2
  fi
}

# Headless Chromium for the status page's browser test (tests/e2e/test_status_page.py): Debian's
# chromium, installed when we are root with apt-get; without it that one test is skipped.
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "==> installing Debian's chromium for the status page's browser test"
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
      >/dev/null 2>&1; then
      return 0
    fi
  fi
  say "note: no chromium (apt-get install chromium): the status page's browser test will be skipped"
}

# Runs a command in its own process group and makes sure that group (emulators, function
# servers and all) is gone when we leave, also on Ctrl-C or a kill. The emulators and function
# servers run in process groups of their own (tests/sims/emulators.py): each one's group id is
# written to ROSTERSYNC_CHILD_GROUPS, and whatever of them is left when the command ends (however
# it ends: Ctrl-C, a kill, a crash) is stopped here too.
_stop_child_groups() {
  local file="$1" group
  [ -f "$file" ] || return 0
  while read -r group; do kill -TERM -- "-$group" 2>/dev/null; done < "$file"
  for _ in $(seq 20); do
    local alive=0
    while read -r group; do kill -0 -- "-$group" 2>/dev/null && alive=1; done < "$file"
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  while read -r group; do kill -KILL -- "-$group" 2>/dev/null; done < "$file"
  rm -f "$file"
}

run_supervised() {
  set +e
  local groups
  groups="$(mktemp "${TMPDIR:-/tmp}/rostersync-groups.XXXXXX")"
  ROSTERSYNC_CHILD_GROUPS="$groups" setsid "$@" &
  local child=$!
  # Give the Python side up to 15 s to stop its children itself before the hard kill.
  trap 'kill -TERM -- -'"$child"' 2>/dev/null; for _ in $(seq 30); do kill -0 -- -'"$child"' 2>/dev/null || break; sleep 0.5; done; kill -KILL -- -'"$child"' 2>/dev/null; _stop_child_groups '"$groups"'; exit 130' INT TERM
  wait "$child"
  local rc=$?
  trap - INT TERM
  kill -TERM -- "-$child" 2>/dev/null
  _stop_child_groups "$groups"
  set -e
  return "$rc"
}
