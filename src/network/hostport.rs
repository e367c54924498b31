//! Host set-up so that a pod's hostPort answers on `127.0.0.1`.
//!
//! portmap DNATs `127.0.0.1:<hostPort>` (nat OUTPUT) to the pod. Two things
//! then stand in the way, both measured with the Debian 12 plugins:
//! 1. the kernel refuses to route a packet with a 127/8 source out of a
//!    non-loopback device unless `route_localnet` is set on that device
//!    (or on `all`);
//! 2. the pod would answer to `127.0.0.1`, its own loopback, so the source
//!    must be masqueraded to the bridge's address.
//!
//! portmap's `"snat": true` (its default, and [`super::DEFAULT_CONFLIST`]'s)
//! does both itself: it sets `route_localnet` on the bridge and marks
//! `-s 127.0.0.1` connections for its `CNI-HOSTPORT-MASQ` chain. Only with
//! `"snat": false` does the host need [`prepare_host_for_hostport_on_localhost`].
//! IPv6 has no equivalent: `::1` never leaves `lo`.

use std::process::Command;

use super::CniError;

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";
const COMMENT: &str = "wharf: hostPort via localhost";

/// An iptables rule the set-up adds; `first` inserts it at the top.
struct Rule {
    table: &'static str,
    chain: &'static str,
    first: bool,
    spec: &'static [&'static str],
}

#[rustfmt::skip]
const RULES: [Rule; 2] = [
    // Replies must come back to the bridge address, not to the pod's lo.
    Rule {
        table: "nat", chain: "POSTROUTING", first: false,
        spec: &["-s", "127.0.0.0/8", "!", "-d", "127.0.0.0/8",
            "-m", "comment", "--comment", COMMENT, "-j", "MASQUERADE"],
    },
    // route_localnet on `all` also lets other hosts reach services bound to
    // 127.0.0.1 (CVE-2020-8558): drop what arrives for 127/8 from elsewhere,
    // as kube-proxy does. First, so that no earlier ACCEPT bypasses it.
    Rule {
        table: "filter", chain: "INPUT", first: true,
        spec: &["!", "-s", "127.0.0.0/8", "-d", "127.0.0.0/8",
            "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT",
            "-m", "comment", "--comment", COMMENT, "-j", "DROP"],
    },
];

/// Makes hostPorts reachable on `127.0.0.1` when portmap runs with
/// `"snat": false`: sets `net.ipv4.conf.all.route_localnet=1`, masquerades
/// 127/8 sources leaving through other devices, and drops martian 127/8
/// traffic arriving from outside. Idempotent (each rule is checked with
/// `iptables -C` before it is added). Acts on the network namespace of the
/// calling thread; needs the `iptables` binary in PATH.
///
/// The daemon calls it at start-up when [`super::Cni::portmap_needs_host_setup`]
/// says so.
pub fn prepare_host_for_hostport_on_localhost() -> Result<(), CniError> {
    std::fs::write(ROUTE_LOCALNET, "1").map_err(|e| CniError::HostSetup {
        step: format!("writing 1 to {ROUTE_LOCALNET}"),
        reason: e.to_string(),
    })?;
    for rule in &RULES {
        if iptables(rule.table, "-C", rule.chain, rule.spec)?.is_ok() {
            continue;
        }
        let add = if rule.first { "-I" } else { "-A" };
        iptables(rule.table, add, rule.chain, rule.spec)?.map_err(|stderr| {
            CniError::HostSetup {
                step: format!(
                    "iptables -t {} {add} {} {}",
                    rule.table,
                    rule.chain,
                    rule.spec.join(" ")
                ),
                reason: stderr,
            }
        })?;
    }
    Ok(())
}

/// `Ok(Err(stderr))` when iptables ran and said no (for `-C`: the rule is
/// missing).
fn iptables(
    table: &str,
    action: &str,
    chain: &str,
    rule: &[&str],
) -> Result<Result<(), String>, CniError> {
    let output = Command::new("iptables")
        // Waits for the xtables lock that plugins take too.
        .args(["-w", "-t", table, action, chain])
        .args(rule)
        .output()
        .map_err(|e| CniError::HostSetup {
            step: "running iptables".into(),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_string()))
    }
}
