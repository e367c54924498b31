//! GetContainerEvents: container and pod state changes from the services,
//! turned into CRI events carrying the pod's status and its containers'
//! statuses (as containerd sends them), fanned out by an [`EventHub`].

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::convert::runtime as convert;
use super::proto::*;
use super::{status_of, Services};
use crate::container::{ContainerFilter, ContainerState, StateChange};
use crate::events::{EventHub, Subscription};
use crate::sandbox::{PodChange, PodEvent};

/// Events a subscriber may fall behind before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 1024;

pub type Hub = EventHub<ContainerEventResponse>;

enum Change {
    Container(StateChange),
    Pod(PodChange),
}

/// Starts the task that turns service changes into events; it ends when
/// both services are gone.
pub fn start(services: Arc<Services>) -> Arc<Hub> {
    let hub = Arc::new(Hub::new(SUBSCRIBER_BACKLOG));
    let mut containers = services.containers.subscribe();
    let mut pods = services.sandboxes.subscribe();
    let publisher = Arc::clone(&hub);
    tokio::spawn(async move {
        let mut last_known = LastKnown::default();
        loop {
            // Containers first when both have news: a pod's containers
            // stop before the pod does.
            let change = tokio::select! {
                biased;
                change = containers.recv() => change.map(Change::Container),
                change = pods.recv() => change.map(Change::Pod),
            };
            let change = match change {
                Ok(change) => change,
                Err(e) if missed(&publisher, &e) => break,
                Err(_) => continue,
            };
            // Statuses are gathered only for someone to send them to; a
            // deleted pod's last status goes either way.
            if publisher.subscribers() == 0 {
                if let Change::Pod(change) = &change {
                    if change.event == PodEvent::Deleted {
                        last_known.0.remove(&change.id);
                    }
                }
                continue;
            }
            let event = match &change {
                Change::Container(change) => container_event(&services, &mut last_known, change),
                Change::Pod(change) => pod_event(&services, &mut last_known, change),
            };
            publisher.publish(&event);
        }
    });
    hub
}

/// The forwarder itself fell behind: every subscriber missed events, so
/// each is told so rather than given a gap. True once the service is gone.
fn missed(hub: &Hub, error: &RecvError) -> bool {
    match *error {
        RecvError::Lagged(count) => {
            tracing::warn!(
                count,
                "event forwarder fell behind; dropping event subscribers"
            );
            hub.drop_all();
            false
        }
        RecvError::Closed => true,
    }
}

/// Pods known to the forwarder at most; past this the memory is cleared
/// (a deletion then goes without the pod's status, as before).
const MAX_LAST_KNOWN: usize = 65_536;

/// Each pod's status as last sent. Events are built after the change, so
/// a deletion finds the pod (or, for its containers removed with it, their
/// pod) gone; kubelet's evented PLEG ignores an event without the pod's
/// status and so never drops the deleted pod from its cache. containerd
/// sends the status as it was just before removal: this is that status.
#[derive(Default)]
struct LastKnown(std::collections::HashMap<String, PodSandboxStatus>);

impl LastKnown {
    fn status(&mut self, services: &Services, sandbox_id: &str) -> Option<PodSandboxStatus> {
        match services.sandboxes.get(sandbox_id) {
            Ok(entry) => {
                let status = convert::sandbox_status(&entry.get());
                if self.0.len() >= MAX_LAST_KNOWN && !self.0.contains_key(sandbox_id) {
                    self.0.clear();
                }
                self.0.insert(sandbox_id.to_string(), status.clone());
                Some(status)
            }
            Err(_) => self.0.get(sandbox_id).cloned(),
        }
    }
}

fn container_event(
    services: &Services,
    last_known: &mut LastKnown,
    change: &StateChange,
) -> ContainerEventResponse {
    let kind = match change.state {
        Some(ContainerState::Created) => ContainerEventType::ContainerCreatedEvent,
        Some(ContainerState::Running) => ContainerEventType::ContainerStartedEvent,
        Some(ContainerState::Exited | ContainerState::Unknown) => {
            ContainerEventType::ContainerStoppedEvent
        }
        None => ContainerEventType::ContainerDeletedEvent,
    };
    event(services, last_known, &change.id, &change.sandbox_id, kind)
}

fn pod_event(
    services: &Services,
    last_known: &mut LastKnown,
    change: &PodChange,
) -> ContainerEventResponse {
    let kind = match change.event {
        PodEvent::Created => ContainerEventType::ContainerCreatedEvent,
        PodEvent::Started => ContainerEventType::ContainerStartedEvent,
        PodEvent::Stopped => ContainerEventType::ContainerStoppedEvent,
        PodEvent::Deleted => ContainerEventType::ContainerDeletedEvent,
    };
    let event = event(services, last_known, &change.id, &change.id, kind);
    if change.event == PodEvent::Deleted {
        last_known.0.remove(&change.id);
    }
    event
}

/// The event for `id` (a container, or the pod itself), with the pod's
/// status (its last known one once it is removed) and the statuses of all
/// its containers as they are now.
fn event(
    services: &Services,
    last_known: &mut LastKnown,
    id: &str,
    sandbox_id: &str,
    kind: ContainerEventType,
) -> ContainerEventResponse {
    let pod_sandbox_status = last_known.status(services, sandbox_id);
    let mut containers = services.containers.list(&ContainerFilter {
        sandbox_id: Some(sandbox_id.to_string()),
        ..Default::default()
    });
    containers.sort_by_key(|c| c.created_at_ns);
    ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: crate::store::now_nanos(),
        pod_sandbox_status,
        containers_statuses: containers
            .iter()
            .map(|container| convert::container_status(container))
            .collect(),
    }
}

pub type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>,
>;

/// A subscription as a gRPC stream; a dropped subscriber's stream ends
/// with RESOURCE_EXHAUSTED.
pub fn subscribe(hub: &Hub) -> Result<EventStream, Status> {
    let subscription = hub.subscribe().map_err(status_of)?;
    let stream = futures_util::stream::unfold(subscription, |mut s: Subscription<_>| async move {
        let next = s.next().await?;
        Some((next.map_err(status_of), s))
    });
    Ok(Box::pin(stream))
}
