//! The streaming server's runtime side, `RuntimeBackend`, driven directly
//! with tokio duplex pipes as the client: real runc, real monitors, real
//! pods. Pods and containers are made through a daemon, which is then
//! stopped; the backend runs on services recovered in this process, as a
//! restarted daemon's would (so attach is also shown to work after a
//! daemon restart).

mod common;
mod streaming_support;

use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use common::pods::{container_config, wait_for_log};
use common::{poll_until, processes_running};
use streaming_support::{
    exec_target, poll_until_async, processes_mentioning, read_all, read_until, session, world,
    world_with, zombie_children,
};
use wharf::streaming::backend::{AttachTarget, Backend, BackendErrorKind, TerminalSize};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_run_in_the_container_and_leave_nothing_behind() {
    let world = world(
        "stream-exec",
        vec![container_config("sleeper", &["sleep", "3600"])],
    )
    .await;
    let id = &world.ids[0];
    let backend = &world.backend;

    // stdin reaches the process; its end closes the process's stdin.
    let (stdio, mut client) = session(true, true, true, false);
    let mut stdin = client.stdin.take().unwrap();
    let feed = async move {
        stdin.write_all(b"hello from stdin\n").await.unwrap();
        drop(stdin);
    };
    let (code, (), out, err) = tokio::join!(
        backend.exec(exec_target(id, &["cat"], false), stdio),
        feed,
        read_all(client.stdout.take()),
        read_all(client.stderr.take()),
    );
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out, b"hello from stdin\n");
    assert!(err.is_empty());

    // Non-zero exit, stderr apart from stdout.
    let (stdio, mut client) = session(false, true, true, false);
    let cmd = ["sh", "-c", "echo out; echo oops >&2; exit 3"];
    let (code, out, err) = tokio::join!(
        backend.exec(exec_target(id, &cmd, false), stdio),
        read_all(client.stdout.take()),
        read_all(client.stderr.take()),
    );
    assert_eq!(code.unwrap(), 3);
    assert_eq!((&out[..], &err[..]), (&b"out\n"[..], &b"oops\n"[..]));

    // Killed by a signal: 128 + signal.
    let (stdio, _client) = session(false, false, false, false);
    let cmd = ["sh", "-c", "kill -9 $$"];
    let code = backend.exec(exec_target(id, &cmd, false), stdio).await;
    assert_eq!(code.unwrap(), 137);

    // A command that does not exist is an error with runc's reason.
    let (stdio, _client) = session(false, true, false, false);
    let error = backend
        .exec(exec_target(id, &["/no/such/binary"], false), stdio)
        .await
        .unwrap_err();
    assert!(error.message.contains("no such file"), "{}", error.message);

    // 10 MiB of output, all of it.
    let (stdio, mut client) = session(false, true, false, false);
    let cmd = ["head", "-c", "10485760", "/dev/zero"];
    let (code, out) = tokio::join!(
        backend.exec(exec_target(id, &cmd, false), stdio),
        read_all(client.stdout.take()),
    );
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out.len(), 10 * 1024 * 1024);
    assert!(out.iter().all(|&b| b == 0));

    // A terminal: sized from the start, resized on request.
    let (stdio, mut client) = session(true, true, false, true);
    let resize = client.resize.take().unwrap();
    resize
        .send(TerminalSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    // Each line typed prints the size; end of input (^D) ends it.
    let cmd = [
        "sh",
        "-c",
        "stty size; while read x; do stty size; done; exit 5",
    ];
    let talk = async move {
        let first = read_until(&mut stdout, "40 100").await;
        resize
            .send(TerminalSize {
                width: 132,
                height: 50,
            })
            .await
            .unwrap();
        // runc applies the size on a signal, apart from the input it
        // relays: ask again until the new size shows.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut second = String::new();
        while !second.contains("50 132") && Instant::now() < deadline {
            stdin.write_all(b"\n").await.unwrap();
            second = read_until(&mut stdout, " ").await;
        }
        stdin.write_all(b"\x04").await.unwrap();
        (first, second, stdin, resize)
    };
    let (code, (first, second, ..)) =
        tokio::join!(backend.exec(exec_target(id, &cmd, true), stdio), talk);
    let code = code.map_err(|e| e.message);
    assert!(first.contains("40 100"), "{first:?} {code:?}");
    assert!(second.contains("50 132"), "{second:?} {code:?}");
    assert_eq!(code.unwrap(), 5);

    // An unknown container.
    let (stdio, _client) = session(false, true, false, false);
    let error = backend
        .exec(exec_target("0123456789abcdef", &["true"], false), stdio)
        .await
        .unwrap_err();
    assert_eq!(error.kind, BackendErrorKind::NotFound, "{}", error.message);

    // 50 sessions, half of them dropped while their process runs: no
    // process, runc or zombie is left.
    let runc_root = world.daemon.state_dir().join("runc");
    let runc_root = runc_root.to_str().unwrap();
    let started = Instant::now();
    for round in 0..50 {
        let (stdio, mut client) = session(false, true, true, false);
        if round % 2 == 0 {
            let (code, out, _) = tokio::join!(
                backend.exec(exec_target(id, &["echo", "hi"], false), stdio),
                read_all(client.stdout.take()),
                read_all(client.stderr.take()),
            );
            assert_eq!((code.unwrap(), &out[..]), (0, &b"hi\n"[..]));
        } else {
            let exec = backend.exec(exec_target(id, &["sleep", "4321"], false), stdio);
            let running = poll_until("the exec'd sleep", Duration::from_secs(20), || {
                (!processes_running(&["sleep", "4321"]).is_empty()).then_some(())
            });
            tokio::select! {
                result = exec => panic!("the sleep ended: {:?}", result.map_err(|e| e.message)),
                () = running => {}
            }
        }
    }
    eprintln!(
        "50 exec sessions (25 cancelled) took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exec_runtimes: Vec<i32> = processes_mentioning(runc_root)
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains("\0exec\0")
            })
            .collect();
        let left = (
            processes_running(&["sleep", "4321"]),
            exec_runtimes,
            zombie_children(),
        );
        if left.0.is_empty() && left.1.is_empty() && left.2.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind (sleeps, runtimes, zombies): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the container itself is untouched.
    let (stdio, _client) = session(false, false, false, false);
    assert_eq!(
        backend
            .exec(exec_target(id, &["true"], false), stdio)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_joins_the_monitor_and_port_forward_reaches_the_pod() {
    let talker = container_config(
        "talker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo out$i; echo err$i >&2; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let cat = ContainerConfig {
        stdin: true,
        ..container_config("cat", &["cat"])
    };
    let web = container_config(
        "web",
        &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/etc"],
    );
    let flood = container_config(
        "flood",
        &[
            "sh",
            "-c",
            "while true; do head -c 65536 /dev/zero; sleep 0.02; done",
        ],
    );
    let sizer = ContainerConfig {
        tty: true,
        stdin: true,
        ..container_config(
            "sizer",
            &["sh", "-c", "while true; do stty size; sleep 0.1; done"],
        )
    };
    let world = world("stream-attach", vec![talker, cat, web, flood, sizer]).await;
    let (talker, cat, flood) = (&world.ids[0], &world.ids[1], &world.ids[3]);
    let sizer = &world.ids[4];
    let backend = &world.backend;
    let attach_to = |id: &str| AttachTarget {
        container_id: id.into(),
        tty: false,
    };

    // Two attachers at once, each with all of the output, stdout and
    // stderr apart; leaving is dropping the session.
    let (first_stdio, mut first) = session(false, true, true, false);
    let (second_stdio, mut second) = session(false, true, false, false);
    let mut first_out = BufReader::new(first.stdout.take().unwrap());
    let mut first_err = BufReader::new(first.stderr.take().unwrap());
    let mut second_out = BufReader::new(second.stdout.take().unwrap());
    let watch = async {
        let a = read_until(&mut first_out, "out").await;
        let b = read_until(&mut first_err, "err").await;
        let c = read_until(&mut second_out, "out").await;
        // Every line that follows, in order, on both.
        let next = |text: &str| {
            let last = text.lines().rfind(|l| l.starts_with("out")).unwrap();
            format!("out{}", last[3..].parse::<u64>().unwrap() + 3)
        };
        let (a_next, c_next) = (next(&a), next(&c));
        read_until(&mut first_out, &a_next).await;
        read_until(&mut second_out, &c_next).await;
        (a, b, c)
    };
    tokio::select! {
        ended = backend.attach(attach_to(talker), first_stdio) => panic!("attach ended: {:?}", ended.map_err(|e| e.message)),
        ended = backend.attach(attach_to(talker), second_stdio) => panic!("attach ended: {:?}", ended.map_err(|e| e.message)),
        (a, b, c) = watch => {
            assert!(!a.contains("err"), "stderr on stdout: {a}");
            assert!(b.lines().all(|l| l.starts_with("err")), "{b}");
            assert!(c.contains("out"));
        }
    }

    // Stdin to a container created without it is refused.
    let (stdio, _client) = session(true, true, false, false);
    let error = backend.attach(attach_to(talker), stdio).await.unwrap_err();
    assert_eq!(error.kind, BackendErrorKind::Invalid, "{}", error.message);

    // Stdin to a container created with it reaches it.
    let (stdio, mut client) = session(true, true, false, false);
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let talk = async {
        stdin.write_all(b"ping through attach\n").await.unwrap();
        read_until(&mut stdout, "ping through attach").await
    };
    tokio::select! {
        ended = backend.attach(attach_to(cat), stdio) => panic!("attach ended: {:?}", ended.map_err(|e| e.message)),
        echoed = talk => assert!(echoed.contains("ping through attach")),
    }

    // Stdin alone: the session ends with the client's stdin, which
    // reached the container (cat echoes it into its log).
    let (stdio, mut client) = session(true, false, false, false);
    let mut stdin = client.stdin.take().unwrap();
    let feed = async move {
        stdin.write_all(b"only stdin\n").await.unwrap();
    };
    let (ended, ()) = tokio::join!(backend.attach(attach_to(cat), stdio), feed);
    ended.unwrap();
    let cat_log = world.daemon.dir.path().join("logs/stream-attach/cat/0.log");
    wait_for_log(&cat_log, "only stdin").await;

    // A terminal: resized through the monitor; a tty mismatch is refused.
    let (stdio, mut client) = session(true, true, false, true);
    let resize = client.resize.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let sized = async {
        resize
            .send(TerminalSize {
                width: 77,
                height: 33,
            })
            .await
            .unwrap();
        read_until(&mut stdout, "33 77").await
    };
    let tty_target = AttachTarget {
        container_id: sizer.clone(),
        tty: true,
    };
    tokio::select! {
        ended = backend.attach(tty_target, stdio) => panic!("attach ended: {:?}", ended.map_err(|e| e.message)),
        seen = sized => assert!(seen.contains("33 77"), "{seen:?}"),
    }
    let (stdio, _client) = session(false, true, false, false);
    let error = backend.attach(attach_to(sizer), stdio).await.unwrap_err();
    assert_eq!(error.kind, BackendErrorKind::Invalid, "{}", error.message);

    // An attacher that stops reading is dropped by the monitor once its
    // buffer is full; the others (and the log) go on: the fast one gets
    // several times what the slow one's buffers could hold.
    let (slow_stdio, _slow) = session(false, true, false, false);
    let (fast_stdio, mut fast) = session(false, true, false, false);
    let mut fast_out = fast.stdout.take().unwrap();
    let fast_reads = async {
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < 8 * 1024 * 1024 {
            let n = fast_out.read(&mut buf).await.unwrap();
            assert!(n > 0, "the fast attacher's output ended");
            total += n;
        }
        total
    };
    let flood_log = world
        .daemon
        .dir
        .path()
        .join("logs/stream-attach/flood/0.log");
    let log_before = std::fs::metadata(&flood_log).unwrap().len();
    tokio::select! {
        ended = backend.attach(attach_to(flood), slow_stdio) => panic!("slow attach ended: {:?}", ended.map_err(|e| e.message)),
        ended = backend.attach(attach_to(flood), fast_stdio) => panic!("fast attach ended: {:?}", ended.map_err(|e| e.message)),
        total = tokio::time::timeout(Duration::from_secs(60), fast_reads) => {
            assert!(total.expect("the fast attacher was held up") >= 8 * 1024 * 1024);
        }
    }
    let log_after = std::fs::metadata(&flood_log).unwrap().len();
    assert!(
        log_after > log_before + 8 * 1024 * 1024,
        "{log_before} -> {log_after}"
    );

    // Port-forward: a connection to loopback in the pod's namespace.
    let mut connection = poll_until_async("httpd listening", || async {
        backend.port_forward(&world.pod_id, 8080).await.ok()
    })
    .await;
    connection
        .write_all(b"GET /passwd HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    connection.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("root:"), "{reply}");
    // The port is the pod's, not the host's: nothing listens on it here
    // (or, if something does, it is not the pod's httpd).
    let closed = backend.port_forward(&world.pod_id, 8081).await.unwrap_err();
    assert_eq!(closed.kind, BackendErrorKind::Internal);
    assert!(closed.message.contains("refused"), "{}", closed.message);
    let unknown = backend.port_forward("no-such-pod", 8080).await.unwrap_err();
    assert_eq!(unknown.kind, BackendErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_host_network_pod() {
    // A port of the host's no one else is likely to use at this moment.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let host_network = NamespaceOption {
        network: NamespaceMode::Node as i32,
        ..Default::default()
    };
    let mut web = container_config(
        "web",
        &[
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            "/etc",
        ],
    );
    web.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(host_network.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let tweak = |pod: &mut PodSandboxConfig| {
        pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(host_network.clone()),
            ..Default::default()
        });
    };
    let world = world_with("stream-hostnet", tweak, vec![web]).await;
    let mut connection = poll_until_async("httpd listening", || async {
        world.backend.port_forward(&world.pod_id, port).await.ok()
    })
    .await;
    connection
        .write_all(b"GET /passwd HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    connection.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    // The host's loopback it is: reachable from here too.
    let direct = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(direct.is_ok(), "{direct:?}");
}
