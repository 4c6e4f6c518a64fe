#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (CI runs this before `make test`).
#
#   docker/provision.sh
#
# If `docker info` answers already: says so, exits 0. Otherwise, as root: installs docker.io,
# docker-compose and debootstrap with apt-get where missing, starts dockerd in the background
# (detached, so it outlives this script; log in $XDG_CACHE_HOME/ocean-secret-store/docker/dockerd.log,
# default ~/.cache) and waits up to 60 s for it to answer. On any failure it prints one line starting
# "docker/provision.sh: no Docker engine:" with the reason and exits 1: the caller decides what that
# means (the tests in tests/docker are then skipped with the engine's own error, never passed).
#
# Environment (for a second engine beside a running one, e.g. to test this script):
#   DOCKER_HOST                  the engine's socket (unix://...): checked with docker, and given to dockerd -H
#   OCEAN_SS_DOCKERD_ARGS        more dockerd arguments, split on spaces
#                                (e.g. "--data-root /tmp/d --exec-root /tmp/e --pidfile /tmp/p --iptables=false").
#                                Not "--bridge none" beside a running engine: dockerd then deletes the
#                                host's docker0, which the running engine's default network needs.
#   OCEAN_SS_DOCKER_WAIT         seconds to wait for the engine (default 60)
set -u

me="docker/provision.sh"
cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ocean-secret-store/docker"
log="$cache/dockerd.log"
wait_s="${OCEAN_SS_DOCKER_WAIT:-60}"

fail() {
  echo "$me: no Docker engine: $*" >&2
  exit 1
}

# The engine's answer (server version) on stdout and status 0; else its error, on one line, and 1.
engine_info() {
  local out
  if out=$(timeout 20 docker info --format '{{.ServerVersion}} ({{.Driver}}, cgroup v{{.CgroupVersion}})' 2>/dev/null) \
      && [ -n "$out" ]; then
    printf '%s' "$out"
    return 0
  fi
  out=$(timeout 20 docker info 2>&1)
  local code=$?
  # The client prints its own section first: keep the server's error lines.
  printf '%s\n' "$out" | grep -iE 'error|cannot|denied|refused|no such|timeout' | tail -n 2 | tr '\n' ' '
  [ "$code" -eq 124 ] && printf 'no answer within 20 s'
  return 1
}

if command -v docker >/dev/null 2>&1; then
  if answer=$(engine_info); then
    echo "$me: the Docker engine answers already: $answer"
    exit 0
  fi
  why=$answer
else
  why="docker is not installed"
fi

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
  fail "not root, so not installing or starting one (docker info: ${why:-no answer})"
fi

# -- packages ------------------------------------------------------------------------------------
missing=()
{ command -v dockerd && command -v docker; } >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "${missing[*]} missing and no apt-get to install them"
  echo "$me: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || fail "apt-get update failed"
    out=$(apt-get install -y -q "${missing[@]}" 2>&1) || fail "apt-get install ${missing[*]} failed: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"
  fi
fi
command -v dockerd >/dev/null 2>&1 || fail "dockerd not found after installing docker.io"

# -- start dockerd, detached -----------------------------------------------------------------------
mkdir -p "$cache" || fail "cannot create $cache"
args=()
if [ -n "${DOCKER_HOST:-}" ]; then
  case "$DOCKER_HOST" in
    unix://*) args+=(-H "$DOCKER_HOST") ;;
    *) fail "DOCKER_HOST=$DOCKER_HOST is not a unix:// socket this script can start an engine on" ;;
  esac
fi
# Word splitting on purpose: a list of arguments in one variable.
# shellcheck disable=SC2206
args+=(${OCEAN_SS_DOCKERD_ARGS:-})

echo "$me: starting dockerd ${args[*]} (log: $log)"
echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) $me: dockerd ${args[*]}" >>"$log"
# Not a process group leader here (no job control), so setsid needs no fork: $! is dockerd.
nohup setsid dockerd "${args[@]}" >>"$log" 2>&1 </dev/null &
pid=$!
disown "$pid" 2>/dev/null || true

deadline=$((SECONDS + wait_s))
while [ "$SECONDS" -lt "$deadline" ]; do
  if answer=$(engine_info); then
    echo "$me: started dockerd (pid $pid): $answer"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    fail "dockerd exited: $(grep -v '^----' "$log" | tail -n 3 | tr '\n' ' ')"
  fi
  sleep 1
done
fail "dockerd (pid $pid, left running) did not answer within ${wait_s} s: $(tail -n 3 "$log" | tr '\n' ' ')"
