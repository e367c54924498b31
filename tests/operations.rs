//! Operating the daemon: the shipped files, systemd readiness over
//! `NOTIFY_SOCKET`, the operator commands, and SIGHUP reload against a
//! running daemon and the real test registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{poll_until, pull_request, registry, Daemon};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{StatusRequest, VersionRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn repo_file(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

fn wharf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .output()
        .expect("running wharf")
}

#[test]
fn shipped_files_are_what_the_binary_prints() {
    let default = wharf(&["config", "default"]);
    assert!(default.status.success());
    assert_eq!(
        String::from_utf8(default.stdout).unwrap(),
        repo_file("deploy/config.toml"),
        "deploy/config.toml is stale: regenerate it with `wharf config default > deploy/config.toml`"
    );
    let cni = wharf(&["config", "cni"]);
    assert!(cni.status.success());
    assert_eq!(
        String::from_utf8(cni.stdout).unwrap().trim_end(),
        repo_file("deploy/10-wharf.conflist").trim_end()
    );
    let crictl = repo_file("deploy/crictl.yaml");
    for line in [
        "runtime-endpoint: unix:///run/wharf/wharf.sock",
        "image-endpoint: unix:///run/wharf/wharf.sock",
        "timeout: 10",
        "debug: false",
    ] {
        assert!(
            crictl.lines().any(|l| l == line),
            "crictl.yaml lacks {line}"
        );
    }
    let unit = repo_file("deploy/wharf.service");
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "wharf.service lacks {line}"
        );
    }
}

#[test]
fn config_check_prints_the_effective_config_or_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[registry]\nstall_timeout_secs = 7\n").unwrap();
    let checked = wharf(&["config", "check", good.to_str().unwrap()]);
    assert!(checked.status.success());
    let printed = String::from_utf8(checked.stdout).unwrap();
    let effective: toml::Table = printed.parse().expect("config check prints TOML");
    assert_eq!(
        effective["registry"]["stall_timeout_secs"].as_integer(),
        Some(7)
    );
    assert_eq!(effective["socket"].as_str(), Some("/run/wharf/wharf.sock"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[stream]\naddress = \"localhost\"\n").unwrap();
    let refused = wharf(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let reason = String::from_utf8(refused.stderr).unwrap();
    assert!(
        reason.contains("stream.address must be an IP address"),
        "{reason}"
    );
    assert!(refused.stdout.is_empty());
}

/// A daemon started by hand with `NOTIFY_SOCKET` set, killed on drop.
struct NotifiedDaemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl NotifiedDaemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("wharf.sock")
    }

    fn start(notify_socket: &Path, extra_args: &[&str]) -> NotifiedDaemon {
        let dir = tempfile::Builder::new().prefix("wn").tempdir().unwrap();
        let config = dir.path().join("wharf.toml");
        std::fs::write(
            &config,
            format!(
                "socket = {:?}\nroot = {:?}\nstate_dir = {:?}\n[registry]\nconfig_path = {:?}\n[cni]\nconf_dir = {:?}\n",
                dir.path().join("wharf.sock"),
                dir.path().join("root"),
                dir.path().join("s"),
                dir.path().join("certs.d"),
                dir.path().join("cni"),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("wharf.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .env("NOTIFY_SOCKET", notify_socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting wharf");
        NotifiedDaemon { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharf.log")).unwrap_or_default()
    }
}

impl Drop for NotifiedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn receive(listener: &tokio::net::UnixDatagram, daemon: &NotifiedDaemon) -> String {
    let mut buffer = vec![0u8; 4096];
    let received = tokio::time::timeout(Duration::from_secs(30), listener.recv(&mut buffer)).await;
    let n = match received {
        Ok(received) => received.unwrap(),
        Err(_) => panic!("no notification within 30 s; log:\n{}", daemon.log()),
    };
    String::from_utf8(buffer[..n].to_vec()).unwrap()
}

async fn cri_client(socket: PathBuf) -> RuntimeServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::try_from("http://wharf.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to wharf");
    RuntimeServiceClient::new(channel)
}

#[tokio::test]
async fn readiness_is_sent_once_the_socket_serves_and_stopping_on_sigterm() {
    let listen_dir = tempfile::tempdir().unwrap();
    let notify_path = listen_dir.path().join("notify.sock");
    let listener = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let mut daemon = NotifiedDaemon::start(&notify_path, &[]);
    let pid = Pid::from_raw(daemon.child.id() as i32);
    // A SIGHUP during start-up (signal handlers are in place once the
    // recovery runs) neither ends the daemon nor comes before READY=1: it
    // is handled once the socket serves.
    poll_until("the recovery to start", Duration::from_secs(30), || {
        daemon.log().contains("sandboxes recovered").then_some(())
    })
    .await;
    kill(pid, Signal::SIGHUP).unwrap();

    let ready = receive(&listener, &daemon).await;
    // At this very moment, before anything else, a CRI call is served.
    let version = cri_client(daemon.socket())
        .await
        .version(VersionRequest::default())
        .await
        .expect("Version right after READY=1")
        .into_inner();
    assert_eq!(version.runtime_name, "wharf");
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready}");
    assert!(
        lines.contains(&format!("STATUS=serving CRI on {}", daemon.socket().display()).as_str()),
        "{ready}"
    );

    let reloading = receive(&listener, &daemon).await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let reloaded = receive(&listener, &daemon).await;
    assert!(reloaded.starts_with("READY=1\n"), "{reloaded}");

    kill(pid, Signal::SIGTERM).unwrap();
    let stopping = receive(&listener, &daemon).await;
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
}

#[tokio::test]
async fn info_prints_the_running_daemons_version_and_status() {
    let daemon = Daemon::start("").await;
    let socket = daemon.socket();
    let output =
        tokio::task::spawn_blocking(move || wharf(&["info", "--socket", socket.to_str().unwrap()]))
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Runtime:  wharf 0.1.0 (CRI v1)"), "{text}");
    assert!(text.contains("RuntimeReady   true"), "{text}");
    // Status(verbose)'s info, pretty-printed JSON.
    let verbose = daemon
        .runtime()
        .await
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    for key in verbose.info.keys() {
        assert!(
            text.contains(&format!("\n{key}:\n")),
            "{key} missing:\n{text}"
        );
    }
}

/// Rewrites the daemon's config file through `edit`, sends SIGHUP and
/// waits for the reload's outcome in the log: the `nth` (1-based)
/// "configuration reloaded" or "configuration rejected" line.
async fn reload(daemon: &Daemon, nth: usize, edit: impl FnOnce(String) -> String) -> String {
    let config = daemon.dir.path().join("wharf.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, edit(text)).unwrap();
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP).unwrap();
    poll_until(
        "the reload's outcome in the log",
        Duration::from_secs(20),
        || {
            let log = daemon.log();
            let outcomes: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("configuration reloaded") || l.contains("configuration rejected")
                })
                .collect();
            outcomes.get(nth - 1).map(|l| l.to_string())
        },
    )
    .await
}

/// The log after the `nth` reload outcome.
fn log_after_reload(daemon: &Daemon, nth: usize) -> String {
    let log = daemon.log();
    let mut seen = 0;
    let mut after = String::new();
    for line in log.lines() {
        if seen >= nth {
            after.push_str(line);
            after.push('\n');
        }
        if line.contains("configuration reloaded") || line.contains("configuration rejected") {
            seen += 1;
        }
    }
    after
}

#[tokio::test]
async fn sighup_moves_pulls_to_a_new_mirror_and_a_broken_config_changes_nothing() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    // A host only a mirror serves, configured in a certs.d the daemon does
    // not read yet.
    let new_certs = daemon.dir.path().join("certs.new");
    let host_dir = new_certs.join("mirror-reload.wharf.invalid");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"https://mirror-reload.wharf.invalid\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.addr
        ),
    )
    .unwrap();
    let name = "mirror-reload.wharf.invalid/wharf-test/busybox:latest";
    let mut images = daemon.images().await;
    images
        .pull_image(pull_request(name, None))
        .await
        .expect_err("no mirror configured yet: the host does not resolve");

    let old_certs = format!("config_path = {:?}", daemon.certs_d());
    let new_certs_line = format!("config_path = {new_certs:?}");
    let outcome = reload(&daemon, 1, |text| text.replace(&old_certs, &new_certs_line)).await;
    assert!(outcome.contains("configuration reloaded"), "{outcome}");
    assert!(outcome.contains("registry.config_path"), "{outcome}");
    let pulled = images
        .pull_image(pull_request(name, None))
        .await
        .expect("the next pull goes through the new mirror")
        .into_inner();
    assert_eq!(
        pulled.image_ref,
        registry.digest("wharf-test/busybox:latest#config")
    );

    // Unparsable: refused, the daemon keeps serving on the old settings.
    let outcome = reload(&daemon, 2, |text| format!("{text}\nthis is = = not toml\n")).await;
    assert!(outcome.contains("configuration rejected"), "{outcome}");
    assert!(outcome.contains("ERROR"), "{outcome}");
    // Parses but does not validate: refused too.
    let outcome = reload(&daemon, 3, |text| {
        text.replace("\nthis is = = not toml\n", "").replace(
            &new_certs_line,
            &format!("{new_certs_line}\nmax_concurrent_downloads = 0"),
        )
    })
    .await;
    assert!(outcome.contains("configuration rejected"), "{outcome}");
    assert!(outcome.contains("max_concurrent_downloads"), "{outcome}");
    daemon
        .runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("still serving");
    images
        .pull_image(pull_request(name, None))
        .await
        .expect("the mirror of the last good config still applies");
}

#[tokio::test]
async fn sighup_changes_the_log_level_and_names_what_needs_a_restart() {
    let daemon = Daemon::start("").await;
    let debug_version_lines = |nth| {
        log_after_reload(&daemon, nth)
            .lines()
            .filter(|l| l.contains("DEBUG") && l.contains("Version"))
            .count()
    };
    let mut runtime = daemon.runtime().await;
    // The harness starts daemons at "info,wharf=debug".
    let root = format!("root = {:?}", daemon.root());
    let outcome = reload(&daemon, 1, |text| {
        text.replace("log_level = \"info,wharf=debug\"", "log_level = \"info\"")
            .replace(&root, "root = \"/var/lib/wharf-elsewhere\"")
    })
    .await;
    assert!(outcome.contains("log_level"), "{outcome}");
    let after = log_after_reload(&daemon, 0);
    assert!(
        after.contains("WARN") && after.contains("needs a restart") && after.contains("key=root"),
        "a changed root is named as needing a restart:\n{after}"
    );
    runtime.version(VersionRequest::default()).await.unwrap();
    // The call's line would have been written before its answer.
    assert_eq!(
        debug_version_lines(1),
        0,
        "debug lines still logged at info"
    );

    reload(&daemon, 2, |text| {
        text.replace("log_level = \"info\"", "log_level = \"info,wharf=debug\"")
    })
    .await;
    runtime.version(VersionRequest::default()).await.unwrap();
    poll_until(
        "a debug line after the reload",
        Duration::from_secs(10),
        || (debug_version_lines(2) > 0).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn sighup_moves_cni_to_a_new_conf_dir() {
    let daemon = Daemon::start("").await;
    let network_ready = || async {
        let status = daemon
            .runtime()
            .await
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
        let conditions = status.status.unwrap().conditions;
        let network = conditions.iter().find(|c| c.r#type == "NetworkReady");
        network.unwrap().status
    };
    assert!(!network_ready().await, "the harness's conf dir is empty");
    let new_conf_dir = daemon.dir.path().join("cni.new");
    std::fs::create_dir_all(&new_conf_dir).unwrap();
    std::fs::write(
        new_conf_dir.join("10-wharf.conflist"),
        repo_file("deploy/10-wharf.conflist"),
    )
    .unwrap();
    let old = format!("conf_dir = {:?}", daemon.cni_dir());
    let outcome = reload(&daemon, 1, |text| {
        text.replace(&old, &format!("conf_dir = {new_conf_dir:?}"))
    })
    .await;
    assert!(outcome.contains("cni.conf_dir"), "{outcome}");
    assert!(network_ready().await, "the new conf dir's network is used");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let listen_dir = tempfile::tempdir().unwrap();
    let notify_path = listen_dir.path().join("notify.sock");
    let listener = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let daemon = NotifiedDaemon::start(&notify_path, &["--log-format", "json"]);
    receive(&listener, &daemon).await;
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let starting = lines
        .iter()
        .find(|line| line["fields"]["message"] == "wharf starting")
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert_eq!(starting["level"], "INFO");
    assert_eq!(starting["fields"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(starting["timestamp"].is_string());
}

#[test]
fn version_names_the_commit_and_the_runtime_found() {
    let output = wharf(&["version"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with(&format!("wharf {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // The test machine's runc, found through PATH as the daemon finds it.
    assert!(
        text.lines()
            .any(|l| l.starts_with("  (default): /") && l.contains("runc version")),
        "{text}"
    );
}
