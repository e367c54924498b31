//! Pod and container lifecycle benchmark: the latency of each CRI call from
//! RunPodSandbox to RemovePodSandbox, against any CRI runtime on a unix
//! socket (Wharf, containerd).
//!
//! hack/bench-lifecycle.sh sets up the daemons, measures the floor under
//! them (raw runc, bare ip netns: hack/bench/floor.py) and merges the
//! results; this binary measures one run per invocation, prints a table and
//! writes JSON (per step: n, p50_ms, p95_ms, mean_ms, max_ms and the raw
//! samples_ms):
//!
//!   lifecycle cri --endpoint unix:///PATH --image REF [--pods N]
//!                 [--parallel P] [--mode cycle|peak|status] [--rounds R]
//!                 [--label NAME] [--daemon-pid PID --shim NAME] [--json FILE]
//!   lifecycle cleanup --endpoint unix:///PATH
//!
//! `cycle` runs each pod's seven calls back to back, P pods at a time.
//! `peak` starts every pod first (P at a time), samples the memory of the
//! daemon and of its helper processes (monitors, shims) with all N pods
//! running, then tears every pod down (P at a time).
//! `status` starts every pod first (P at a time), then R rounds of one
//! ListContainers and a ContainerStatus of each container, one call at a
//! time, with all N containers running; then tears every pod down.
//!
//! With no subcommand (as `cargo bench` runs it) it only says how to run it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint, Uri};

/// The label every benchmark pod and container carries, so that `cleanup`
/// and the leftover check find them.
const LABEL: (&str, &str) = ("wharf-bench", "lifecycle");
/// A call that takes longer than this counts as failed.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a peak run waits for the helpers to exit after teardown.
const HELPER_EXIT_WAIT: Duration = Duration::from_secs(10);

const RUN_POD: &str = "RunPodSandbox";
const CREATE: &str = "CreateContainer";
const START: &str = "StartContainer";
const STOP: &str = "StopContainer";
const REMOVE: &str = "RemoveContainer";
const STOP_POD: &str = "StopPodSandbox";
const REMOVE_POD: &str = "RemovePodSandbox";
const POD_START: &str = "pod start (run+create+start)";
const CREATE_START: &str = "CreateContainer + StartContainer";
const POD_TEARDOWN: &str = "pod teardown (stop..remove pod)";
const LIST: &str = "ListContainers";
const STATUS: &str = "ContainerStatus";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(name = "lifecycle", about = "CRI pod/container lifecycle benchmark")]
struct Cli {
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Time the CRI calls of N pods against a daemon.
    Cri(CriArgs),
    /// Stop and remove every pod this benchmark left on a daemon.
    Cleanup {
        #[arg(long)]
        endpoint: String,
    },
    /// Wait until a (re)starting daemon answers Version and lists N
    /// running containers; print both times since --since-ns.
    WaitReady(extra::WaitReadyArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Cycle,
    Peak,
    Status,
    /// Pods started P at a time while one client loops ListContainers,
    /// ListPodSandbox and ContainerStatus; then torn down.
    Busy,
    /// Pods started P at a time and left running (for a restart).
    Up,
}

#[path = "lifecycle/extra.rs"]
mod extra;

#[derive(Args)]
struct CriArgs {
    /// Pods in the run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pods: u32,
    /// How many are in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    parallel: u32,
    /// Also write the results here, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// unix:///path/to/socket
    #[arg(long)]
    endpoint: String,
    /// The container image; pulled first, outside the timings.
    #[arg(long)]
    image: String,
    /// More images to pull first (containerd's sandbox image).
    #[arg(long)]
    prepull: Vec<String>,
    /// Names the run in the output.
    #[arg(long, default_value = "wharf")]
    label: String,
    #[arg(long, value_enum, default_value_t = Mode::Cycle)]
    mode: Mode,
    /// Rounds of ListContainers and ContainerStatus calls (status mode).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: u32,
    #[arg(long, default_value = "/wharf-bench")]
    cgroup_parent: String,
    /// Pod log directories go below it (default: a temporary directory).
    #[arg(long)]
    log_root: Option<PathBuf>,
    /// The daemon's pid, for memory samples in peak mode.
    #[arg(long, requires = "shim")]
    daemon_pid: Option<i32>,
    /// Executable name of the daemon's helper processes (wharf-monitor,
    /// containerd-shim-runc-v2); those in the daemon's network namespace
    /// count.
    #[arg(long, requires = "daemon_pid")]
    shim: Option<String>,
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        None => {
            println!("lifecycle: run hack/bench-lifecycle.sh (or `lifecycle --help`)");
            Ok(())
        }
        Some(Command::Cri(args)) => block_on(cri_bench(args)),
        Some(Command::WaitReady(args)) => block_on(extra::wait_ready(args)),
        Some(Command::Cleanup { endpoint }) => block_on(async move {
            let removed = cleanup(RuntimeServiceClient::new(connect(&endpoint).await?)).await?;
            eprintln!("lifecycle: removed {removed} leftover pods");
            Ok(())
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lifecycle: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A single-threaded runtime: the client should take as little CPU from
/// the daemon as it can.
fn block_on(work: impl Future<Output = Result<(), Error>>) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

// --- Samples and their summary ----------------------------------------------

/// Latencies per step and the failures, shared by the workers of one run.
#[derive(Default)]
struct Recorder {
    samples: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
    failures: Mutex<Vec<Value>>,
}

impl Recorder {
    fn sample(&self, step: &'static str, elapsed: Duration) {
        let mut samples = self.samples.lock().unwrap();
        samples.entry(step).or_default().push(elapsed);
    }

    fn fail(&self, step: &str, subject: &str, message: String) {
        eprintln!("lifecycle: {step} {subject}: {message}");
        let failure = json!({"step": step, "subject": subject, "message": message});
        self.failures.lock().unwrap().push(failure);
    }

    fn failed(&self) -> bool {
        !self.failures.lock().unwrap().is_empty()
    }

    /// `{"steps": {step: stats}, "failures": [...]}` plus `extra`'s fields;
    /// printed as a table under `title`, written to `json` if given.
    fn report(&self, title: &str, extra: Value, json: Option<&Path>) -> Result<(), Error> {
        let samples = self.samples.lock().unwrap();
        let steps: serde_json::Map<_, _> = samples
            .iter()
            .map(|(step, durations)| (step.to_string(), stats(durations)))
            .collect();
        let failures = self.failures.lock().unwrap().clone();
        println!("{title}");
        println!(
            "  {:<34} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "step", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for (step, s) in &steps {
            let ms = |key: &str| s[key].as_f64().unwrap_or(f64::NAN);
            let (p50, p95, p99, max) = (ms("p50_ms"), ms("p95_ms"), ms("p99_ms"), ms("max_ms"));
            println!(
                "  {step:<34} {:>5} {p50:>9.3} {p95:>9.3} {p99:>9.3} {max:>9.3}",
                s["n"]
            );
        }
        if let Some(first) = failures.first() {
            println!("  {} FAILED calls; the first: {first}", failures.len());
        }
        let mut summary = json!({"steps": steps, "failures": failures});
        summary
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&summary)? + "\n";
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

fn stats(durations: &[Duration]) -> Value {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    // Nearest rank: the smallest sample with at least q of them at or below it.
    let percentile = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({
        "n": ms.len(),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64,
        "max_ms": ms[ms.len() - 1],
        "samples_ms": ms,
    })
}

/// Runs `job(i)` for i in 0..n, at most `parallel` at once, and returns
/// the results in order.
async fn concurrently<T, F, Fut>(n: usize, parallel: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let workers: Vec<_> = (0..parallel.min(n))
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                let mut done = vec![];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return done;
                    }
                    done.push((i, job(i).await));
                }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for worker in workers {
        results.extend(worker.await.expect("a benchmark worker panicked"));
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, result)| result).collect()
}

// --- The CRI benchmark ------------------------------------------------------

async fn connect(endpoint: &str) -> Result<Channel, Error> {
    let socket = endpoint
        .strip_prefix("unix://")
        .map(PathBuf::from)
        .ok_or_else(|| format!("endpoint {endpoint:?} is not unix:///PATH"))?;
    let channel = Endpoint::try_from("http://cri.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
    Ok(channel)
}

/// What the daemon made of one benchmark pod so far.
#[derive(Default)]
struct PodState {
    name: String,
    pod_id: Option<String>,
    container_id: Option<String>,
    /// All three start calls succeeded: its teardown is timed too.
    started: bool,
}

struct Run {
    client: RuntimeServiceClient<Channel>,
    recorder: Recorder,
    image: String,
    log_root: PathBuf,
    cgroup_parent: String,
    /// Makes pod UIDs unique across runs.
    run_id: String,
}

impl Run {
    /// Awaits one call: its latency is recorded (when `timed`) on success,
    /// a failure on error or timeout.
    async fn call<T>(
        &self,
        step: &'static str,
        pod: &str,
        timed: bool,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        let start = Instant::now();
        let result = tokio::time::timeout(RPC_TIMEOUT, rpc).await;
        let elapsed = start.elapsed();
        let message = match result {
            Ok(Ok(response)) => {
                if timed {
                    self.recorder.sample(step, elapsed);
                }
                return Some(response.into_inner());
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {RPC_TIMEOUT:?}"),
        };
        self.recorder.fail(step, pod, message);
        None
    }

    /// RunPodSandbox, CreateContainer, StartContainer of pod `i`; stops at
    /// the first failure.
    async fn start_pod(&self, i: usize) -> PodState {
        let mut pod = PodState {
            name: format!("bench-{i}"),
            ..Default::default()
        };
        let config = match self.pod_config(&pod.name) {
            Ok(config) => config,
            Err(error) => {
                self.recorder.fail(RUN_POD, &pod.name, error.to_string());
                return pod;
            }
        };
        let (mut client, name, begin) = (self.client.clone(), pod.name.clone(), Instant::now());
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let Some(reply) = self
            .call(RUN_POD, &name, true, client.run_pod_sandbox(request))
            .await
        else {
            return pod;
        };
        let pod_id = pod.pod_id.insert(reply.pod_sandbox_id).clone();
        let create_begin = Instant::now();
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(self.container_config()),
            sandbox_config: Some(config),
        };
        let Some(reply) = self
            .call(CREATE, &name, true, client.create_container(request))
            .await
        else {
            return pod;
        };
        let container_id = pod.container_id.insert(reply.container_id).clone();
        let request = StartContainerRequest { container_id };
        if self
            .call(START, &name, true, client.start_container(request))
            .await
            .is_some()
        {
            self.recorder.sample(CREATE_START, create_begin.elapsed());
            self.recorder.sample(POD_START, begin.elapsed());
            pod.started = true;
        }
        pod
    }

    /// StopContainer (timeout 0: SIGKILL at once), RemoveContainer,
    /// StopPodSandbox, RemovePodSandbox of whatever the pod has.
    async fn stop_pod(&self, pod: PodState) {
        let (mut client, name, timed, begin) =
            (self.client.clone(), &pod.name, pod.started, Instant::now());
        let mut all_ok = true;
        if let Some(container_id) = pod.container_id.clone() {
            let request = StopContainerRequest {
                container_id: container_id.clone(),
                timeout: 0,
            };
            all_ok &= self
                .call(STOP, name, timed, client.stop_container(request))
                .await
                .is_some();
            let request = RemoveContainerRequest { container_id };
            all_ok &= self
                .call(REMOVE, name, timed, client.remove_container(request))
                .await
                .is_some();
        }
        if let Some(pod_id) = pod.pod_id.clone() {
            let request = StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            };
            all_ok &= self
                .call(STOP_POD, name, timed, client.stop_pod_sandbox(request))
                .await
                .is_some();
            let request = RemovePodSandboxRequest {
                pod_sandbox_id: pod_id,
            };
            all_ok &= self
                .call(REMOVE_POD, name, timed, client.remove_pod_sandbox(request))
                .await
                .is_some();
        }
        if timed && all_ok {
            self.recorder.sample(POD_TEARDOWN, begin.elapsed());
        }
    }

    /// One ListContainers, then a ContainerStatus of each of `ids`, one
    /// call at a time; each checks that every container still runs.
    async fn query_status(&self, ids: &[String]) {
        let mut client = self.client.clone();
        let request = ListContainersRequest { filter: None };
        if let Some(reply) = self
            .call(LIST, "all", true, client.list_containers(request))
            .await
        {
            let running = reply
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::ContainerRunning as i32)
                .count();
            if running < ids.len() {
                let message = format!("{running} of {} containers running", ids.len());
                self.recorder.fail(LIST, "all", message);
            }
        }
        for id in ids {
            let request = ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            };
            let reply = self
                .call(STATUS, id, true, client.container_status(request))
                .await;
            let state = reply.and_then(|r| r.status).map(|s| s.state);
            if state != Some(ContainerState::ContainerRunning as i32) {
                self.recorder
                    .fail(STATUS, id, format!("state {state:?}, not running"));
            }
        }
    }

    fn pod_config(&self, name: &str) -> Result<PodSandboxConfig, Error> {
        let log_directory = self.log_root.join(name);
        // kubelet creates the log directory; containerd expects it to exist.
        std::fs::create_dir_all(log_directory.join("sleeper"))
            .map_err(|e| format!("creating {}: {e}", log_directory.display()))?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", self.run_id),
                namespace: "wharf-bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.display().to_string(),
            labels: bench_labels(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleeper".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleeper/0.log".into(),
            labels: bench_labels(),
            ..Default::default()
        }
    }
}

async fn cri_bench(args: CriArgs) -> Result<(), Error> {
    let channel = connect(&args.endpoint).await?;
    let client = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    for image in std::iter::once(&args.image).chain(&args.prepull) {
        let spec = ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let request = PullImageRequest {
            image: Some(spec),
            ..Default::default()
        };
        images
            .pull_image(request)
            .await
            .map_err(|s| format!("pulling {image}: {}", s.message()))?;
    }
    let (pods, containers) = count_bench_objects(&client).await?;
    if pods + containers > 0 {
        return Err(format!(
            "{pods} pods / {containers} containers of an earlier run are still there"
        )
        .into());
    }
    let temp_logs = tempfile::tempdir()?;
    let run = Arc::new(Run {
        client: client.clone(),
        recorder: Recorder::default(),
        image: args.image.clone(),
        log_root: args
            .log_root
            .clone()
            .unwrap_or_else(|| temp_logs.path().to_path_buf()),
        cgroup_parent: args.cgroup_parent.clone(),
        run_id: format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
        ),
    });
    let probe = match (args.daemon_pid, &args.shim) {
        (Some(pid), Some(shim)) => Some(memory::Probe::new(pid, shim, &args.cgroup_parent)?),
        _ => None,
    };
    let (n, parallel) = (args.pods as usize, args.parallel as usize);

    let mut memory = serde_json::Map::new();
    let began = Instant::now();
    if matches!(args.mode, Mode::Busy | Mode::Up) {
        extra::busy_or_up(&run, args.mode, n, parallel).await;
    } else if args.mode == Mode::Cycle {
        let cycle = run.clone();
        concurrently(n, parallel, move |i| {
            let run = cycle.clone();
            async move { run.stop_pod(run.start_pod(i).await).await }
        })
        .await;
    } else if args.mode == Mode::Status {
        let starter = run.clone();
        let started = concurrently(n, parallel, move |i| {
            let run = starter.clone();
            async move { run.start_pod(i).await }
        })
        .await;
        let ids: Vec<String> = started
            .iter()
            .filter(|pod| pod.started)
            .filter_map(|pod| pod.container_id.clone())
            .collect();
        for _ in 0..args.rounds {
            run.query_status(&ids).await;
        }
        let started = Arc::new(
            started
                .into_iter()
                .map(|p| Mutex::new(Some(p)))
                .collect::<Vec<_>>(),
        );
        let stopper = run.clone();
        concurrently(n, parallel, move |i| {
            let (run, pod) = (stopper.clone(), started[i].lock().unwrap().take());
            async move { run.stop_pod(pod.expect("each pod is stopped once")).await }
        })
        .await;
    } else {
        if let Some(probe) = &probe {
            memory.insert("idle".into(), probe.sample()?);
        }
        let starter = run.clone();
        let started = concurrently(n, parallel, move |i| {
            let run = starter.clone();
            async move { run.start_pod(i).await }
        })
        .await;
        if let Some(probe) = &probe {
            // Let freshly started processes finish faulting in.
            tokio::time::sleep(Duration::from_secs(1)).await;
            memory.insert("peak".into(), probe.sample()?);
        }
        let started: Arc<Vec<Mutex<Option<PodState>>>> = Arc::new(
            started
                .into_iter()
                .map(|pod| Mutex::new(Some(pod)))
                .collect(),
        );
        let stopper = run.clone();
        concurrently(n, parallel, move |i| {
            let (run, pod) = (stopper.clone(), started[i].lock().unwrap().take());
            async move { run.stop_pod(pod.expect("each pod is stopped once")).await }
        })
        .await;
        if let Some(probe) = &probe {
            memory.insert("after".into(), probe.sample_when_helpers_exit().await?);
        }
    }
    let wall = began.elapsed().as_secs_f64();

    let (left_pods, left_containers) = count_bench_objects(&client).await?;
    let mode = match args.mode {
        Mode::Cycle => "cycle",
        Mode::Peak => "peak",
        Mode::Status => "status",
        Mode::Busy => "busy",
        Mode::Up => "up",
    };
    let title = format!(
        "{} {mode}: {n} pods, {parallel} at a time, {wall:.2} s",
        args.label
    );
    let extra = json!({
        "label": args.label, "mode": mode, "pods": n, "parallel": parallel, "wall_secs": wall,
        "leftover": {"pods": left_pods, "containers": left_containers}, "memory": memory,
    });
    run.recorder.report(&title, extra, args.json.as_deref())?;
    for (when, sample) in &memory {
        println!("  memory {when}: {sample}");
    }
    if left_pods + left_containers > 0 {
        println!("  LEFT BEHIND after teardown: {left_pods} pods, {left_containers} containers");
    }
    if run.recorder.failed() {
        return Err("some calls failed (see above)".into());
    }
    Ok(())
}

fn bench_labels() -> HashMap<String, String> {
    HashMap::from([(LABEL.0.into(), LABEL.1.into())])
}

/// Pods and containers carrying the benchmark's label.
async fn count_bench_objects(
    client: &RuntimeServiceClient<Channel>,
) -> Result<(usize, usize), Error> {
    let mut client = client.clone();
    let filter = PodSandboxFilter {
        label_selector: bench_labels(),
        ..Default::default()
    };
    let pods = client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await?;
    let filter = ContainerFilter {
        label_selector: bench_labels(),
        ..Default::default()
    };
    let containers = client
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await?;
    Ok((
        pods.into_inner().items.len(),
        containers.into_inner().containers.len(),
    ))
}

/// Stops and removes every pod with the benchmark's label.
async fn cleanup(mut client: RuntimeServiceClient<Channel>) -> Result<usize, Error> {
    let filter = PodSandboxFilter {
        label_selector: bench_labels(),
        ..Default::default()
    };
    let request = ListPodSandboxRequest {
        filter: Some(filter),
    };
    let pods = client.list_pod_sandbox(request).await?.into_inner().items;
    for pod in &pods {
        let pod_sandbox_id = pod.id.clone();
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.clone(),
            })
            .await?;
        client
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
            .await?;
    }
    Ok(pods.len())
}

/// Memory of a daemon and of its helper processes, from /proc.
mod memory {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    pub struct Probe {
        daemon: i32,
        daemon_netns: u64,
        shim: String,
        cgroup_parent: String,
    }

    impl Probe {
        pub fn new(daemon: i32, shim: &str, cgroup_parent: &str) -> Result<Probe, Error> {
            let daemon_netns = netns(daemon).ok_or_else(|| format!("no process {daemon}"))?;
            Ok(Probe {
                daemon,
                daemon_netns,
                shim: shim.into(),
                cgroup_parent: cgroup_parent.into(),
            })
        }

        /// The monitors or shims: `shim` executables in the daemon's network
        /// namespace (the pods' processes are in the pods' own).
        fn helpers(&self) -> Vec<i32> {
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return vec![];
            };
            let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
            pids.filter(|&pid| pid != self.daemon && netns(pid) == Some(self.daemon_netns))
                .filter(|&pid| {
                    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                    let name = exe.file_name().unwrap_or_default().to_string_lossy();
                    name.trim_end_matches(" (deleted)") == self.shim
                })
                .collect()
        }

        /// kB figures: the daemon's VmRSS, PSS and VmHWM; the helpers' count
        /// and summed RSS and PSS; the processes in the pods' cgroups.
        pub fn sample(&self) -> Result<Value, Error> {
            let daemon = Usage::of(self.daemon)
                .ok_or_else(|| format!("the daemon (pid {}) is gone", self.daemon))?;
            let helpers = Usage::sum(&self.helpers());
            let pods = Usage::sum(&pod_processes(&self.cgroup_parent));
            Ok(json!({
                "daemon_rss_kb": daemon.rss_kb, "daemon_pss_kb": daemon.pss_kb, "daemon_hwm_kb": daemon.hwm_kb,
                "shims": helpers.count, "shim_rss_kb": helpers.rss_kb, "shim_pss_kb": helpers.pss_kb,
                "pod_processes": pods.count, "pod_rss_kb": pods.rss_kb,
            }))
        }

        /// A sample once the helpers have exited, or HELPER_EXIT_WAIT passed.
        pub async fn sample_when_helpers_exit(&self) -> Result<Value, Error> {
            let deadline = Instant::now() + HELPER_EXIT_WAIT;
            while !self.helpers().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.sample()
        }
    }

    fn netns(pid: i32) -> Option<u64> {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|m| m.ino())
    }

    /// Every process in the cgroups below `parent`: the containers' and,
    /// with containerd, the pause processes.
    fn pod_processes(parent: &str) -> Vec<i32> {
        let relative = parent.trim_start_matches('/');
        let root = ["memory", "pids", ""]
            .iter()
            .map(|controller| Path::new("/sys/fs/cgroup").join(controller).join(relative))
            .find(|dir| dir.join("cgroup.procs").exists());
        let (mut pids, mut dirs) = (vec![], Vec::from_iter(root));
        while let Some(dir) = dirs.pop() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|line| line.parse::<i32>().ok()));
            let entries = std::fs::read_dir(&dir).into_iter().flatten().flatten();
            dirs.extend(
                entries
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        pids
    }

    #[derive(Default)]
    struct Usage {
        count: usize,
        rss_kb: u64,
        pss_kb: u64,
        hwm_kb: u64,
    }

    impl Usage {
        fn of(pid: i32) -> Option<Usage> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            let rss_kb = kb_field(&status, "VmRSS:");
            let (hwm_kb, pss_kb) = (kb_field(&status, "VmHWM:"), kb_field(&rollup, "Pss:"));
            Some(Usage {
                count: 1,
                rss_kb,
                pss_kb,
                hwm_kb,
            })
        }

        fn sum(pids: &[i32]) -> Usage {
            pids.iter()
                .filter_map(|&pid| Usage::of(pid))
                .fold(Usage::default(), |total, one| Usage {
                    count: total.count + 1,
                    rss_kb: total.rss_kb + one.rss_kb,
                    pss_kb: total.pss_kb + one.pss_kb,
                    hwm_kb: total.hwm_kb.max(one.hwm_kb),
                })
        }
    }

    fn kb_field(text: &str, field: &str) -> u64 {
        let value = |line: &str| {
            line.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        text.lines().find_map(value).unwrap_or(0)
    }
}
