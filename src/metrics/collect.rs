//! The gauges computed at each scrape from the services' in-memory
//! records: pods and containers by state, monitors alive, pulls in flight
//! with their bytes. No disk I/O, no waiting on a lifecycle operation: each
//! record's lock is held only to read it.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::container::{ContainerService, ContainerState};
use crate::image::ImageService;
use crate::sandbox::{SandboxService, SandboxState};

/// Reads the services at each scrape.
pub struct StateCollector {
    pub images: Arc<ImageService>,
    pub sandboxes: Arc<SandboxService>,
    pub containers: Arc<ContainerService>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

const POD_STATES: [(SandboxState, &str); 2] = [
    (SandboxState::Ready, "ready"),
    (SandboxState::NotReady, "notready"),
];

const CONTAINER_STATES: [(ContainerState, &str); 4] = [
    (ContainerState::Created, "created"),
    (ContainerState::Running, "running"),
    (ContainerState::Exited, "exited"),
    (ContainerState::Unknown, "unknown"),
];

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pods = self.sandboxes.states();
        let pods = POD_STATES.map(|(state, name)| {
            let count = pods.iter().filter(|s| **s == state).count();
            (name, count as i64)
        });
        gauge_by_label(&mut encoder, "pods", "Pods by state.", None, "state", &pods)?;

        let containers = self.containers.summaries();
        let by_state = CONTAINER_STATES.map(|(state, name)| {
            let count = containers.iter().filter(|c| c.state == state).count();
            (name, count as i64)
        });
        gauge_by_label(
            &mut encoder,
            "containers",
            "Containers by state.",
            None,
            "state",
            &by_state,
        )?;
        let alive = containers.iter().filter(|c| c.monitor_alive).count();
        gauge(
            &mut encoder,
            "monitors_alive",
            "Containers whose wharf-monitor the daemon is connected to.",
            None,
            alive as i64,
        )?;

        let pulls = self.images.pulls_in_progress();
        gauge(
            &mut encoder,
            "image_pulls_in_flight",
            "Image pulls in progress.",
            None,
            pulls.len() as i64,
        )?;
        let done: Vec<(&str, i64)> = pulls
            .iter()
            .map(|p| (p.image.as_str(), saturating(p.done_bytes)))
            .collect();
        gauge_by_label(
            &mut encoder,
            "image_pull_done",
            "Bytes of the layers of a pull in progress received (or already present).",
            Some(&Unit::Bytes),
            "image",
            &done,
        )?;
        let expected: Vec<(&str, i64)> = pulls
            .iter()
            .map(|p| (p.image.as_str(), saturating(p.expected_bytes)))
            .collect();
        gauge_by_label(
            &mut encoder,
            "image_pull_expected",
            "Bytes of all the layers of a pull in progress (0 until its manifest is read).",
            Some(&Unit::Bytes),
            "image",
            &expected,
        )
    }
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// One gauge per label value.
fn gauge_by_label(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &'static str,
    values: &[(&str, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (value, count) in values {
        let labels = [(label, *value)];
        let metric_encoder = family.encode_family(&labels)?;
        ConstGauge::new(*count).encode(metric_encoder)?;
    }
    Ok(())
}
