//! The `busy` and `up` modes and `wait-ready`: read-call latency while pods
//! are being created, and a daemon's start-up with containers running.

use std::sync::atomic::AtomicBool;

use super::*;

const LIST_PODS: &str = "ListPodSandbox";

/// `busy`: starts N pods P at a time while one more client loops
/// ListContainers, ListPodSandbox and ContainerStatus (of a listed
/// container), then tears them down. `up`: starts them and leaves them.
pub async fn busy_or_up(run: &Arc<Run>, mode: Mode, n: usize, parallel: usize) {
    let done = Arc::new(AtomicBool::new(false));
    let querier = (mode == Mode::Busy).then(|| {
        let (run, done) = (run.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                run.query_once().await;
            }
        })
    });
    let starter = run.clone();
    let started = concurrently(n, parallel, move |i| {
        let run = starter.clone();
        async move { run.start_pod(i).await }
    })
    .await;
    done.store(true, Ordering::Relaxed);
    if let Some(querier) = querier {
        let _ = querier.await;
    }
    if mode == Mode::Up {
        return;
    }
    let started: Arc<Vec<Mutex<Option<PodState>>>> =
        Arc::new(started.into_iter().map(|p| Mutex::new(Some(p))).collect());
    let stopper = run.clone();
    concurrently(n, parallel, move |i| {
        let (run, pod) = (stopper.clone(), started[i].lock().unwrap().take());
        async move { run.stop_pod(pod.expect("each pod is stopped once")).await }
    })
    .await;
}

impl Run {
    /// One ListContainers, ListPodSandbox and ContainerStatus of the first
    /// container listed (if any).
    async fn query_once(&self) {
        let mut client = self.client.clone();
        let request = ListContainersRequest { filter: None };
        let listed = self
            .call(LIST, "all", true, client.list_containers(request))
            .await;
        let request = ListPodSandboxRequest { filter: None };
        self.call(LIST_PODS, "all", true, client.list_pod_sandbox(request))
            .await;
        let first = listed.and_then(|reply| reply.containers.into_iter().next());
        if let Some(container) = first {
            let request = ContainerStatusRequest {
                container_id: container.id.clone(),
                verbose: false,
            };
            // A container removed meanwhile is not a failure of the call.
            let start = Instant::now();
            if client.container_status(request).await.is_ok() {
                self.recorder.sample(STATUS, start.elapsed());
            }
        }
    }
}

#[derive(Args)]
pub struct WaitReadyArgs {
    #[arg(long)]
    endpoint: String,
    /// Running containers to wait for.
    #[arg(long)]
    containers: usize,
    /// When the daemon was started, in ns since the epoch (date +%s%N).
    #[arg(long)]
    since_ns: u128,
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Polls every 2 ms: connect and Version, then ListContainers until N
/// running containers are listed.
pub async fn wait_ready(args: WaitReadyArgs) -> Result<(), Error> {
    let since = UNIX_EPOCH + Duration::from_nanos(args.since_ns as u64);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let elapsed_ms = || {
        SystemTime::now()
            .duration_since(since)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    let poll = Duration::from_millis(2);
    let mut client = loop {
        if let Ok(channel) = connect(&args.endpoint).await {
            let mut client = RuntimeServiceClient::new(channel);
            let request = VersionRequest {
                version: String::new(),
            };
            if client.version(request).await.is_ok() {
                break client;
            }
        }
        if Instant::now() > deadline {
            return Err("the daemon never answered Version".into());
        }
        tokio::time::sleep(poll).await;
    };
    let version_ms = elapsed_ms();
    let listed_ms = loop {
        let request = ListContainersRequest { filter: None };
        let running = client
            .list_containers(request)
            .await
            .map(|reply| {
                let containers = reply.into_inner().containers;
                let running = ContainerState::ContainerRunning as i32;
                containers.iter().filter(|c| c.state == running).count()
            })
            .unwrap_or(0);
        if running >= args.containers {
            break elapsed_ms();
        }
        if Instant::now() > deadline {
            return Err(format!("{running} of {} containers listed", args.containers).into());
        }
        tokio::time::sleep(poll).await;
    };
    println!(
        "ready: Version after {version_ms:.1} ms, {} running containers listed after {listed_ms:.1} ms",
        args.containers
    );
    if let Some(path) = args.json {
        let value = json!({"version_ms": version_ms, "listed_ms": listed_ms, "containers": args.containers});
        std::fs::write(&path, value.to_string() + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
