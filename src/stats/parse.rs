//! Pure parsers for the kernel's stats files: everything here takes text
//! and returns numbers, so it is tested without a cgroup.

use std::collections::HashMap;

pub use crate::cgroup::{parse_flat_keyed, parse_single_value};

/// v1 `memory.limit_in_bytes` reports "no limit" as a huge page-aligned
/// number (`PAGE_COUNTER_MAX * PAGE_SIZE`); anything from 2^62 up is
/// treated as unlimited, as runc and cAdvisor do.
const V1_UNLIMITED: u64 = 1 << 62;

/// A limit file: `max` (v2) or a huge number (v1) mean no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    parse_single_value(text).filter(|&limit| limit < V1_UNLIMITED)
}

/// kubelet's working set: usage minus the inactive file cache, never
/// below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// What is left below the limit, when there is one.
pub fn available(limit: Option<u64>, working_set: u64) -> Option<u64> {
    limit.map(|limit| limit.saturating_sub(working_set))
}

/// Cores used between two cumulative CPU samples, in nano-cores: the
/// CPU time spent divided by the wall time elapsed. `None` when time did
/// not advance or the counter went back (a recreated cgroup).
pub fn nano_cores(
    previous_usage_ns: u64,
    previous_at_ns: i64,
    usage_ns: u64,
    at_ns: i64,
) -> Option<u64> {
    let elapsed = u64::try_from(at_ns.checked_sub(previous_at_ns)?).ok()?;
    if elapsed == 0 || usage_ns < previous_usage_ns {
        return None;
    }
    let spent = u128::from(usage_ns - previous_usage_ns);
    u64::try_from(spent * 1_000_000_000 / u128::from(elapsed)).ok()
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// `/proc/net/dev`: two header lines, then `name: rx(8 fields) tx(8)`.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if fields.len() < 16 {
                return None;
            }
            Some(InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: fields[0],
                rx_packets: fields[1],
                rx_errors: fields[2],
                rx_dropped: fields[3],
                tx_bytes: fields[8],
                tx_packets: fields[9],
                tx_errors: fields[10],
                tx_dropped: fields[11],
            })
        })
        .collect()
}

/// Pressure stall information (`cpu.pressure`, `memory.pressure`):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a `full` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    pub total_us: u64,
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: Option<PressureLine>,
    pub full: Option<PressureLine>,
}

pub fn parse_pressure(text: &str) -> Pressure {
    let mut pressure = Pressure::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut pressure.some,
            Some("full") => &mut pressure.full,
            _ => continue,
        };
        let values: HashMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
        let float = |key| values.get(key).and_then(|v| v.parse::<f64>().ok());
        if let (Some(total), Some(avg10), Some(avg60), Some(avg300)) = (
            values.get("total").and_then(|v| v.parse().ok()),
            float("avg10"),
            float("avg60"),
            float("avg300"),
        ) {
            *slot = Some(PressureLine {
                total_us: total,
                avg10,
                avg60,
                avg300,
            });
        }
    }
    pressure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_working_set() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(working_set(100, 30), 70);
        assert_eq!(working_set(10, 30), 0);
        assert_eq!(available(Some(100), 70), Some(30));
        assert_eq!(available(Some(50), 70), Some(0));
        assert_eq!(available(None, 70), None);
    }

    #[test]
    fn nano_cores_from_two_samples() {
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(
            nano_cores(1_000, 0, 500_001_000, 1_000_000_000),
            Some(500_000_000)
        );
        assert_eq!(nano_cores(5, 10, 6, 10), None, "no time passed");
        assert_eq!(nano_cores(5, 10, 4, 20), None, "counter went back");
        assert_eq!(nano_cores(5, 20, 6, 10), None, "clock went back");
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0\n  \
eth0: 1234567    890    1    4    0     0          0         0     4321      12    3    5    0     0       0          0\n\
 bad: 1 2 3\n";
        let interfaces = parse_net_dev(text);
        assert_eq!(interfaces.len(), 2);
        assert_eq!(
            interfaces[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 1234567,
                rx_packets: 890,
                rx_errors: 1,
                rx_dropped: 4,
                tx_bytes: 4321,
                tx_packets: 12,
                tx_errors: 3,
                tx_dropped: 5,
            }
        );
    }

    #[test]
    fn pressure() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=67\n";
        let p = parse_pressure(text);
        assert_eq!(p.some.unwrap().total_us, 12345);
        assert_eq!(p.some.unwrap().avg10, 1.5);
        assert_eq!(p.full.unwrap().total_us, 67);
        // cpu.pressure on older kernels has only `some`.
        assert_eq!(
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n").full,
            None
        );
    }
}
