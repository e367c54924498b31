//! Reading pod IPs out of a CNI result (spec 0.1.0 to 1.x).

use std::net::IpAddr;

use serde_json::Value;

/// The IPs of `ifname` in the sandbox, first IPv4 first (it becomes the
/// pod's primary IP, as in containerd), then the others in result order.
///
/// Results 0.3.0 and later list `ips` with an index into `interfaces`; IPs
/// that point at no sandbox interface called `ifname` are skipped unless no
/// IP points at one (some plugins omit the index). Results before 0.3.0
/// carry `ip4`/`ip6`.
pub(crate) fn pod_ips(result: &Value, ifname: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips = match result.get("ips") {
        Some(Value::Array(entries)) => ips_of_interface(result, entries, ifname)?,
        Some(_) => return Err("\"ips\" is not an array".into()),
        None => ["ip4", "ip6"]
            .iter()
            .filter_map(|key| result.get(key)?.get("ip"))
            .map(parse_cidr_address)
            .collect::<Result<_, _>>()?,
    };
    if let Some(first_v4) = ips.iter().position(IpAddr::is_ipv4) {
        let primary = ips.remove(first_v4);
        ips.insert(0, primary);
    }
    Ok(ips)
}

fn ips_of_interface(
    result: &Value,
    entries: &[Value],
    ifname: &str,
) -> Result<Vec<IpAddr>, String> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_pod_interface = |entry: &Value| {
        let Some(index) = entry.get("interface").and_then(Value::as_u64) else {
            return false;
        };
        let Some(interface) = usize::try_from(index).ok().and_then(|i| interfaces.get(i)) else {
            return false;
        };
        let in_sandbox = interface
            .get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        in_sandbox && interface.get("name").and_then(Value::as_str) == Some(ifname)
    };
    let mut chosen: Vec<&Value> = entries.iter().filter(|e| is_pod_interface(e)).collect();
    if chosen.is_empty() {
        chosen = entries.iter().collect();
    }
    chosen
        .into_iter()
        .map(|entry| parse_cidr_address(entry.get("address").unwrap_or(&Value::Null)))
        .collect()
}

/// `"10.88.0.5/16"` → `10.88.0.5`.
fn parse_cidr_address(value: &Value) -> Result<IpAddr, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("address {value} is not a string"))?;
    let address = text.split_once('/').map_or(text, |(address, _)| address);
    address
        .parse()
        .map_err(|_| format!("address {text:?} is not an IP"))
}

/// Parses `"10.0.0.0/24"` or `"fd00::/64"`, checking the prefix length.
pub(crate) fn is_cidr(text: &str) -> bool {
    let Some((address, bits)) = text.split_once('/') else {
        return false;
    };
    let max_bits = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    bits.parse::<u8>().is_ok_and(|bits| bits <= max_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_first_then_the_rest_of_eth0() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/var/run/netns/p"},
                {"name": "net1", "mac": "dd", "sandbox": "/var/run/netns/p"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 2},
                {"address": "10.1.0.5/24", "interface": 3}
            ]
        });
        assert_eq!(
            pod_ips(&result, "eth0").unwrap(),
            [ip("10.0.0.5"), ip("fd00::5")]
        );
    }

    #[test]
    fn ips_without_an_interface_index_all_count() {
        let result = json!({"cniVersion": "0.3.1", "ips": [
            {"version": "6", "address": "fd00::5/64"},
            {"version": "4", "address": "10.0.0.5/24"}
        ]});
        assert_eq!(
            pod_ips(&result, "eth0").unwrap(),
            [ip("10.0.0.5"), ip("fd00::5")]
        );
    }

    #[test]
    fn legacy_results() {
        let result = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.5/24"}, "ip6": {"ip": "fd00::5/64"}});
        assert_eq!(
            pod_ips(&result, "eth0").unwrap(),
            [ip("10.0.0.5"), ip("fd00::5")]
        );
        assert!(pod_ips(&json!({}), "eth0").unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(pod_ips(&json!({"ips": {}}), "eth0").is_err());
        assert!(pod_ips(&json!({"ips": [{"address": "nope/24"}]}), "eth0").is_err());
        assert!(pod_ips(&json!({"ips": [{"address": 5}]}), "eth0").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/24"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("x/8"));
    }
}
