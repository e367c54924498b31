#!/usr/bin/env bash
# Build (once) and print the path of a static busybox for critest's images.
#
#   hack/build-busybox.sh
#
# Debian's busybox-static lacks the pgrep and ipcs applets critest runs, and
# its shell runs applets internally (FEATURE_SH_STANDALONE), so masking
# /bin/ls would not hide ls. This builds Debian's own busybox source with
# Debian's static config, those applets on and the standalone shell off.
# The binary is cached in ${WHARF_CACHE:-/var/cache/wharf-hack}; a second run
# only prints its path. Build chatter goes to a log shown only on failure.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

cache_dir=${WHARF_CACHE:-/var/cache/wharf-hack}
# Bump when the config changes below, so stale cached binaries are not reused.
config_revision=1
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
binary=$cache_dir/busybox-$codename-r$config_revision

if [[ -x $binary ]]; then
	echo "$binary"
	exit 0
fi

# apt-get source needs a deb-src entry: add one for the mirror apt already
# uses for this release (main only, which is where busybox lives).
if [[ -z $(apt-get indextargets 'Created-By: Sources' "Release: $codename") ]]; then
	# shellcheck disable=SC2016 # $(REPO_URI) is apt's format syntax, not shell
	mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' \
		"Release: $codename" | head -n 1)
	if [[ -z $mirror ]]; then
		echo "no apt source for Debian $codename to take busybox's source from" >&2
		exit 1
	fi
	cat >/etc/apt/sources.list.d/wharf-deb-src.sources <<EOF
Types: deb-src
URIs: $mirror
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	apt-get -qq -o DPkg::Lock::Timeout=300 update >&2
fi
apt_install build-essential dpkg-dev

work_dir=$(mktemp -d)
log=$work_dir/build.log
show_log_on_failure() {
	local status=$?
	if ((status != 0)) && [[ -s $log ]]; then
		tail -n 40 "$log" >&2
		echo "busybox build failed (log above)" >&2
	fi
	rm -rf "$work_dir"
}
trap show_log_on_failure EXIT

(
	cd "$work_dir"
	apt-get source -qq busybox
	cd busybox-*/
	# A fixed build date and no config timestamp make the build reproducible,
	# so images built from it keep their digests across machines.
	SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -STimestamp)
	export SOURCE_DATE_EPOCH KCONFIG_NOTIMESTAMP=1
	cp debian/config/pkg/static .config
	sed -i -E \
		-e 's/^CONFIG_(FEATURE_SH_STANDALONE|FEATURE_PREFER_APPLETS)=y$/# CONFIG_\1 is not set/' \
		-e 's/^# CONFIG_(PGREP|PKILL|IPCS) is not set$/CONFIG_\1=y/' \
		.config
	# Accept defaults for the options the edits made visible. (Not "yes |":
	# its SIGPIPE would fail the pipeline.)
	make oldconfig < <(yes "")
	make -j"$(nproc)" busybox \
		BB_EXTRA_VERSION="Debian $(dpkg-parsechangelog -SVersion), built for wharf"
	cp busybox "$work_dir/busybox"
) >"$log" 2>&1

for applet in pgrep ipcs netstat nslookup wget top; do
	if ! "$work_dir/busybox" --list | grep -qx "$applet"; then
		echo "built busybox lacks the $applet applet" >&2
		exit 1
	fi
done

mkdir -p "$cache_dir"
# Install atomically: a concurrent or interrupted run never sees half a file.
cp "$work_dir/busybox" "$binary.tmp.$$"
mv "$binary.tmp.$$" "$binary"
echo "$binary"
