//! `wharf version`: this binary's version and commit, and the OCI runtime
//! binaries the configuration names, as found on this machine.

use std::path::Path;
use std::process::Command;

use wharf::config::Config;

pub fn print(config: &Config) {
    let commit = match env!("WHARF_GIT_COMMIT") {
        "" => "unknown".to_string(),
        commit => commit.to_string(),
    };
    println!("wharf {} (commit {commit})", env!("CARGO_PKG_VERSION"));
    println!("runtime handlers:");
    let default = std::iter::once(("(default)".to_string(), config.runtime.path.clone()));
    let handlers = config
        .runtime
        .handlers
        .iter()
        .map(|(name, handler)| (name.clone(), handler.path.clone()));
    for (name, path) in default.chain(handlers) {
        println!("  {name}: {}", describe(&path));
    }
    let monitor = match &config.runtime.monitor_path {
        Some(path) => Ok(path.clone()),
        None => wharf::runtime::default_monitor_binary(),
    };
    match monitor {
        Ok(path) if path.is_file() => println!("monitor: {}", path.display()),
        Ok(path) => println!("monitor: {} (not found)", path.display()),
        Err(e) => println!("monitor: not found ({e})"),
    }
}

/// "`/usr/bin/runc` (runc version 1.1.5)", or why it is not usable.
fn describe(configured: &Path) -> String {
    let Some(found) = wharf::runtime::find_binary(configured) else {
        return format!("{} (not found)", configured.display());
    };
    let version = Command::new(&found)
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines().next().map(str::to_string)
        });
    match version {
        Some(version) => format!("{} ({version})", found.display()),
        None => format!("{} (--version failed)", found.display()),
    }
}
