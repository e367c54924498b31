# shellcheck shell=bash
# Shared helpers for hack/ scripts; source it, don't run it.

# apt_install PACKAGE...: install the packages not yet installed, quietly,
# showing apt's output only on failure (callers keep stdout for their result).
apt_install() {
	local missing=() package log
	for package in "$@"; do
		dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' ||
			missing+=("$package")
	done
	((${#missing[@]})) || return 0
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	# Wait for a concurrent apt instead of failing on its lock.
	local apt=(apt-get -qq -o DPkg::Lock::Timeout=300)
	# A fresh machine may have never fetched package lists: update and retry.
	if "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1 ||
		{ "${apt[@]}" update >>"$log" 2>&1 &&
			"${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }; then
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
