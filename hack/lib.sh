# shellcheck shell=bash
# Shared helpers for hack/ scripts; source it, don't run it.

# apt_install PACKAGE...: install quietly, showing apt's output only on failure
# (callers keep stdout for their result and stderr for real problems).
apt_install() {
	local log
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine may have never fetched package lists: update and retry.
	if apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 ||
		{ apt-get update -qq >>"$log" 2>&1 &&
			apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; }; then
		rm -f "$log"
	else
		cat "$log" >&2
		rm -f "$log"
		return 1
	fi
}

# ensure_command CMD PACKAGE: install PACKAGE when CMD is missing, since CI
# starts from a fresh machine and every tool a script uses is installed here.
ensure_command() {
	command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}
