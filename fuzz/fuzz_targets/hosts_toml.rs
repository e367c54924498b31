//! `certs.d/<host>/hosts.toml` parsing (src/image/registry/hosts.rs), as
//! the resolver does when a pull names that host: TOML from the node's
//! admin, but parsed on every pull, so it must fail cleanly, never panic.
//!
//! Input: one byte choosing the registry host (the last choice takes the
//! host from the text's first line instead), then the file's text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::image::registry::parse_hosts_toml;

const DOMAINS: &[&str] = &[
    "docker.io",
    "registry.k8s.io",
    "localhost:5000",
    "127.0.0.1:5000",
    "[::1]:5000",
    "mirror.example.com",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let choice = usize::from(selector) % (DOMAINS.len() + 1);
    let (domain, text) = match DOMAINS.get(choice) {
        Some(domain) => (*domain, text),
        None => text.split_once('\n').unwrap_or((text, "")),
    };
    match parse_hosts_toml(text, domain) {
        Ok(roots) => {
            // At least the server, and every endpoint an absolute http(s) URL.
            assert!(!roots.is_empty(), "no endpoints for {domain}");
            for root in &roots {
                assert!(
                    root.starts_with("http://") || root.starts_with("https://"),
                    "{root:?}"
                );
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
