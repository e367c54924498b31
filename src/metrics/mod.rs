//! Prometheus metrics: what Wharf counts, and the endpoint that serves it.
//!
//! Two halves, at two layers:
//! - [`global`]: the counters and histograms every layer records into as
//!   things happen (RPCs at the gRPC edge, pulls and unpacks in the image
//!   service, recoveries in the container service). A leaf, like
//!   [`crate::error`]: it imports nothing of Wharf's.
//! - [`collect`] and [`server`]: an edge, like the streaming server. At
//!   each scrape the collector reads the services' in-memory records (pods
//!   and containers by state, monitors alive, pulls in flight) and the
//!   server answers `GET /metrics` in the Prometheus text format.
//!
//! Names are in the `wharf_` namespace, snake_case, with their unit
//! (`_seconds`, `_bytes`) and `_total` for counters, as containerd and
//! CRI-O name theirs.

pub mod collect;
pub mod server;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::error::Kind;

/// Every metric name starts with this (and `_`).
pub const NAMESPACE: &str = "wharf";

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// What is recorded as it happens; see [`global`].
pub struct Metrics {
    grpc_requests: Family<Labels<2>, Counter>,
    grpc_duration: Family<Labels<1>, Histogram>,
    errors: Family<Labels<1>, Counter>,
    pulls: Family<Labels<1>, Counter>,
    pulled_bytes: Counter,
    layers_unpacked: Counter,
    unpacked_bytes: Counter,
    containers_recovered: Counter,
}

/// Latency buckets of RPCs, in seconds: from a cached ListContainers
/// (sub-millisecond) to a large PullImage (minutes).
const RPC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_BUCKETS)
}

/// The process's metrics. One per process, as kubelet scrapes one
/// runtime: a second daemon in the same process (tests) shares them.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let metrics = Metrics {
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(rpc_histogram),
            errors: Family::default(),
            pulls: Family::default(),
            pulled_bytes: Counter::default(),
            layers_unpacked: Counter::default(),
            unpacked_bytes: Counter::default(),
            containers_recovered: Counter::default(),
        };
        // Present from the start, so that a rate over them has a zero.
        for result in PULL_RESULTS {
            let _ = metrics.pulls.get_or_create(&[("result", result)]);
        }
        metrics
    });
    &METRICS
}

/// How a pull ended, the `result` label of `wharf_image_pulls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullResult {
    Success = 0,
    Failure = 1,
    /// The client went away before the pull ended.
    Cancelled = 2,
}

/// The label values of [`PullResult`], in its order.
const PULL_RESULTS: [&str; 3] = ["success", "failure", "cancelled"];

impl Metrics {
    /// One CRI call: `method` is the RPC's name (`RunPodSandbox`).
    pub fn observe_rpc(&self, method: &'static str, code: Code, elapsed: Duration) {
        self.grpc_requests
            .get_or_create(&[("method", method), ("code", code_name(code))])
            .inc();
        self.grpc_duration
            .get_or_create(&[("method", method)])
            .observe(elapsed.as_secs_f64());
    }

    /// An error answered to a client, by the [`Kind`] it was classified as.
    pub fn count_error(&self, kind: Kind) {
        self.errors
            .get_or_create(&[("kind", kind_name(kind))])
            .inc();
    }

    pub fn pull_ended(&self, result: PullResult) {
        let result = PULL_RESULTS[result as usize];
        self.pulls.get_or_create(&[("result", result)]).inc();
    }

    /// Layer bytes received from registries.
    pub fn add_pulled_bytes(&self, bytes: u64) {
        self.pulled_bytes.inc_by(bytes);
    }

    /// A layer unpacked and committed; `bytes` is what it wrote.
    pub fn layer_unpacked(&self, bytes: u64) {
        self.layers_unpacked.inc();
        self.unpacked_bytes.inc_by(bytes);
    }

    pub fn containers_recovered(&self, count: u64) {
        self.containers_recovered.inc_by(count);
    }

    /// Registers clones (which share their values) of every metric.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_requests",
            "CRI calls answered, by method and gRPC code",
            self.grpc_requests.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "Time to answer a CRI call, by method",
            Unit::Seconds,
            self.grpc_duration.clone(),
        );
        registry.register(
            "errors",
            "Errors answered to CRI clients, by kind (the gRPC code's cause)",
            self.errors.clone(),
        );
        registry.register(
            "image_pulls",
            "Image pulls ended, by result (success, failure, cancelled)",
            self.pulls.clone(),
        );
        registry.register_with_unit(
            "image_pulled",
            "Layer bytes received from registries",
            Unit::Bytes,
            self.pulled_bytes.clone(),
        );
        registry.register(
            "image_layers_unpacked",
            "Layers unpacked into the layer store",
            self.layers_unpacked.clone(),
        );
        registry.register_with_unit(
            "image_unpacked",
            "Bytes of regular files written by layer unpacking",
            Unit::Bytes,
            self.unpacked_bytes.clone(),
        );
        registry.register(
            "containers_recovered",
            "Containers found again when the daemon started",
            self.containers_recovered.clone(),
        );
    }
}

/// A registry of everything: the recorded metrics and what `collector`
/// reads at each scrape.
pub fn registry(collector: collect::StateCollector) -> Registry {
    let mut registry = Registry::with_prefix(NAMESPACE);
    global().register(&mut registry);
    registry.register_collector(Box::new(collector));
    registry
}

/// gRPC's own names for its codes, as Go (and so containerd's metrics)
/// spell them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::InvalidArgument => "invalid_argument",
        Kind::NotFound => "not_found",
        Kind::AlreadyExists => "already_exists",
        Kind::FailedPrecondition => "failed_precondition",
        Kind::Unavailable => "unavailable",
        Kind::DeadlineExceeded => "deadline_exceeded",
        Kind::ResourceExhausted => "resource_exhausted",
        Kind::DataLoss => "data_loss",
        Kind::Unimplemented => "unimplemented",
        Kind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_namespace_units_and_total() {
        let metrics = global();
        metrics.observe_rpc("Version", Code::Ok, Duration::from_millis(2));
        metrics.count_error(Kind::NotFound);
        metrics.pull_ended(PullResult::Cancelled);
        let mut registry = Registry::with_prefix(NAMESPACE);
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for series in [
            "wharf_grpc_requests_total{method=\"Version\",code=\"OK\"} ",
            "wharf_grpc_request_duration_seconds_bucket{method=\"Version\",le=\"0.0025\"} ",
            "wharf_errors_total{kind=\"not_found\"} ",
            "wharf_image_pulls_total{result=\"success\"} ",
            "wharf_image_pulls_total{result=\"cancelled\"} ",
            "wharf_image_pulled_bytes_total ",
            "wharf_image_unpacked_bytes_total ",
            "wharf_containers_recovered_total ",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
        assert_eq!(code_name(Code::Cancelled), "Canceled", "as Go spells it");
    }
}
