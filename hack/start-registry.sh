#!/usr/bin/env bash
# Start a local distribution (v2) registry in the background for tests.
#
#   hack/start-registry.sh [--auth USER:PASS] [--port N] STATE_DIR
#
# Listens on 127.0.0.1 (a free port unless --port is given), stores blobs in
# STATE_DIR/storage, logs to STATE_DIR/registry.log, and writes
# STATE_DIR/registry.pid and STATE_DIR/registry.addr. Prints only the address
# (127.0.0.1:PORT) on stdout, so callers can do addr=$(hack/start-registry.sh d).
# Running it again for the same STATE_DIR reuses the running registry.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

usage() {
	echo "usage: $0 [--auth USER:PASS] [--port N] STATE_DIR" >&2
	exit 2
}

auth="" port="" state_dir=""
while (($#)); do
	case $1 in
	--auth) auth=${2:?--auth needs USER:PASS}; shift 2 ;;
	--port) port=${2:?--port needs a number}; shift 2 ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) [[ -z $state_dir ]] || usage; state_dir=$1; shift ;;
	esac
done
[[ -n $state_dir ]] || usage
if [[ -n $auth && $auth != *:* ]]; then
	echo "--auth must be USER:PASS" >&2
	exit 2
fi

mkdir -p "$state_dir"
state_dir=$(cd "$state_dir" && pwd)
pid_file=$state_dir/registry.pid
addr_file=$state_dir/registry.addr

# /v2/ answers 200 without auth and 401 with it: any HTTP status means "up".
registry_answers() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/v2/" || true)
	[[ $code != 000 && -n $code ]]
}

ensure_command curl curl

if [[ -s $pid_file && -s $addr_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null &&
	registry_answers "$(cat "$addr_file")"; then
	cat "$addr_file"
	exit 0
fi

ensure_command docker-registry docker-registry

if [[ -z $port ]]; then
	# Ask the kernel for an unused port. Another process could take it before
	# the registry binds, but for a test helper that window is acceptable.
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
addr=127.0.0.1:$port
if registry_answers "$addr"; then
	echo "port $port is already serving HTTP; pick another with --port" >&2
	exit 1
fi

auth_config=""
if [[ -n $auth ]]; then
	ensure_command htpasswd apache2-utils
	# The registry only accepts bcrypt entries in its htpasswd file.
	htpasswd -Bbn "${auth%%:*}" "${auth#*:}" >"$state_dir/htpasswd"
	auth_config="auth:
  htpasswd:
    realm: wharf-test-registry
    path: $state_dir/htpasswd"
fi

cat >"$state_dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $state_dir/storage
  delete:
    enabled: true
http:
  addr: $addr
$auth_config
EOF

# setsid + closed stdio: the registry must outlive this script and must not
# hold the caller's stdout pipe open (that would hang "$(...)").
setsid docker-registry serve "$state_dir/config.yml" \
	>>"$state_dir/registry.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

for _ in $(seq 100); do
	if registry_answers "$addr"; then
		echo "$addr" >"$addr_file"
		echo "$addr"
		exit 0
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "registry exited early; last log lines:" >&2
		tail -n 20 "$state_dir/registry.log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "registry did not answer on $addr within 10s; see $state_dir/registry.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
