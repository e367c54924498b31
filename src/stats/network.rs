//! Per-interface counters of pods' network namespaces. Wharf has no pause
//! process whose `/proc/<pid>/net/dev` could be read, so a throw-away
//! thread enters each pinned namespace in turn and reads
//! `/proc/thread-self/net/dev` (`/proc/self/net` would show the namespace
//! of the daemon's main thread). The thread ends after the batch: a thread
//! that changed namespace is never reused.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

use super::parse::{parse_net_dev, InterfaceCounters};

const NET_DEV: &str = "/proc/thread-self/net/dev";

/// The counters of each namespace, in order; `None` where a namespace
/// could not be entered or read (the pod is being stopped).
pub async fn read_all(namespaces: Vec<PathBuf>) -> Vec<Option<Vec<InterfaceCounters>>> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    let count = namespaces.len();
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("wharf-netstats".into())
        .spawn(move || {
            let read: Vec<_> = namespaces.iter().map(|ns| read_in(ns)).collect();
            let _ = done.send(read);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting the network stats thread");
        return vec![None; count];
    }
    result.await.unwrap_or_else(|_| vec![None; count])
}

/// Moves the calling thread into `netns`: only for the batch thread.
fn read_in(netns: &std::path::Path) -> Option<Vec<InterfaceCounters>> {
    let entered = File::open(netns)
        .map_err(|e| e.to_string())
        .and_then(|file| setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()));
    if let Err(e) = entered {
        tracing::debug!(netns = %netns.display(), error = %e, "entering a pod's network namespace");
        return None;
    }
    match std::fs::read_to_string(NET_DEV) {
        Ok(text) => Some(parse_net_dev(&text)),
        Err(e) => {
            tracing::debug!(netns = %netns.display(), error = %e, "reading {NET_DEV}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_namespace_it_is_given_not_the_callers() {
        // The host's own namespace, through a path: the thread's view must
        // match what the host shows.
        let host = read_all(vec![PathBuf::from("/proc/self/ns/net")]).await;
        let names: Vec<String> = host[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.name.clone())
            .collect();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        let missing = read_all(vec![PathBuf::from("/nonexistent/ns/net")]).await;
        assert_eq!(missing, vec![None]);
    }

    #[tokio::test]
    async fn counts_traffic_inside_another_namespace() {
        let name = format!("wharf-statsnet-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success()
        };
        ip(&["netns", "delete", &name]);
        assert!(ip(&["netns", "add", &name]));
        assert!(ip(&["-n", &name, "link", "set", "lo", "up"]));
        let path = PathBuf::from("/run/netns").join(&name);
        let inside = path.clone();
        // A refused connection inside: SYN and RST on its lo.
        std::thread::spawn(move || {
            setns(File::open(&inside).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
            let _ = std::net::TcpStream::connect("127.0.0.1:9");
        })
        .join()
        .unwrap();
        let read = read_all(vec![path]).await;
        ip(&["netns", "delete", &name]);
        let interfaces = read[0].clone().unwrap();
        let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
        assert!(lo.rx_bytes > 0 && lo.tx_packets >= 2, "{interfaces:?}");
        assert_eq!(
            interfaces.len(),
            1,
            "only the namespace's own lo: {interfaces:?}"
        );
    }
}
