//! Generates the CRI v1 server and client from the vendored `proto/api.proto`.
//! protox compiles the file in-process: Debian's protoc rejects this version.
//! Also records the git commit being built, for `wharf version`.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let descriptors = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        // The client serves `wharf info`; it connects through a hyper h2
        // connection of its own, so without tonic's transport (`channel`).
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    record_git_commit();
    Ok(())
}

/// `WHARF_GIT_COMMIT`: the commit checked out, or empty outside a git
/// checkout (a source tarball) or without git. Rebuilt when HEAD moves.
fn record_git_commit() {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=WHARF_GIT_COMMIT={commit}");
    // HEAD names the branch; the branch's ref file (or packed-refs) moves
    // with each commit. Worktrees keep them in different directories,
    // which --git-path resolves.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        // A missing path would make cargo rerun this script every build.
        let path = git(&["rev-parse", "--git-path", &name]);
        if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
