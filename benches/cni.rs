//! CNI ADD and DEL through Wharf's `Cni` with the real plugins (bridge,
//! host-local, portmap), with and without a hostPort, in network
//! namespaces of its own (the host's is never touched). Prints the median
//! and minimum of several rounds. Run as root: `cargo bench --bench cni`.
//!
//! Nearly all of the time is the plugins' own (each is a process that
//! configures netlink and iptables); Wharf's part is building their input
//! and reading their result, so these figures are the floor any runtime
//! calling the same plugins pays.

#[path = "../tests/cni_world/mod.rs"]
mod cni_world;

use std::time::{Duration, Instant};

use cni_world::{Netns, World, HOST_PORT};
use wharf::network::{PortMapping, Protocol};

const ROUNDS: usize = 7;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cni bench: needs root (network namespaces); skipped");
        return;
    }
    let world = World::with_portmap(true);
    let pod_ns = Netns::new("pod");
    let plain = world.pod(&pod_ns, "timed");
    let mut with_host_port = plain.clone();
    with_host_port.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    println!("bridge + host-local + portmap, {ROUNDS} rounds each");
    for (label, pod) in [("no hostPort", &plain), ("one hostPort", &with_host_port)] {
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let started = Instant::now();
            world.setup(pod).expect("ADD");
            adds.push(started.elapsed());
            let started = Instant::now();
            world.teardown(pod).expect("DEL");
            dels.push(started.elapsed());
        }
        println!(
            "{label:>13}: ADD median {:.1} ms (min {:.1}), DEL median {:.1} ms (min {:.1})",
            ms(median(&mut adds)),
            ms(adds[0]),
            ms(median(&mut dels)),
            ms(dels[0]),
        );
    }
    assert!(world.allocated_ips().is_empty(), "every address released");
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
