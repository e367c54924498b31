//! Unit tests of the container entry: exits recorded once, waiters woken,
//! state changes announced, watchers ended.

use std::time::Duration;

use super::*;
use crate::runtime::ExitStatus;

/// A container record as CreateContainer makes it (`started`: and as
/// StartContainer then records it).
pub(super) fn container(started: bool) -> Container {
    Container {
        id: "c1".into(),
        sandbox_id: "p1".into(),
        name: "c_p_ns_uid_0".into(),
        created_at_ns: 1,
        started_at_ns: started.then_some(2),
        start_requested_at_ns: None,
        start_in_flight: false,
        image_name: "busybox".into(),
        image_id: "sha256:0".into(),
        image_ref: "sha256:0".into(),
        layers: Vec::new(),
        log_path: None,
        state_dir: "/nonexistent/c1".into(),
        rootfs: "/nonexistent/c1/rootfs".into(),
        stop_signal: 15,
        failure: None,
        identity: None,
        deferred_start: false,
        runtime_handler: String::new(),
        resources: None,
        exit: None,
        config: Default::default(),
    }
}

pub(super) fn entry(started: bool) -> (Arc<Entry>, broadcast::Receiver<StateChange>) {
    let changes = broadcast::Sender::new(16);
    let receiver = changes.subscribe();
    (Entry::new(container(started), changes), receiver)
}

pub(super) fn change(state: ContainerState) -> StateChange {
    StateChange {
        id: "c1".into(),
        sandbox_id: "p1".into(),
        state: Some(state),
    }
}

#[tokio::test]
async fn an_exit_is_recorded_once_and_wakes_the_waiters() {
    let (entry, _changes) = entry(true);
    let waiter = {
        let entry = Arc::clone(&entry);
        tokio::spawn(async move { entry.wait_exited(Duration::from_secs(60)).await })
    };
    tokio::task::yield_now().await;
    let first = ExitStatus::exited(3, 10);
    entry.record_end(ContainerEnd::Exited(first));
    assert!(waiter.await.unwrap());
    // A later report (a second watcher, a lost monitor) changes nothing.
    entry.record_end(ContainerEnd::Exited(ExitStatus::killed(9, 11)));
    entry.record_end(ContainerEnd::Lost);
    let recorded = entry.get();
    assert_eq!(recorded.state(), ContainerState::Exited);
    assert_eq!((recorded.exit, recorded.failure), (Some(first), None));
    // An exited container is waited for without waiting.
    assert!(entry.wait_exited(Duration::ZERO).await);
}

#[tokio::test]
async fn a_lost_monitor_leaves_the_container_exited_with_the_reason() {
    let (entry, _changes) = entry(false);
    assert_eq!(entry.get().state(), ContainerState::Created);
    entry.record_end(ContainerEnd::Lost);
    let recorded = entry.get();
    assert_eq!(recorded.state(), ContainerState::Exited);
    assert_eq!(
        (recorded.exit, recorded.failure.as_deref()),
        (None, Some(LOST))
    );
    assert!(entry.wait_exited(Duration::ZERO).await);
}

#[tokio::test]
async fn a_running_container_is_not_reported_exited() {
    let (entry, _changes) = entry(true);
    assert!(!entry.wait_exited(Duration::from_millis(20)).await);
    assert_eq!(entry.get().state(), ContainerState::Running);
}

#[tokio::test]
async fn each_state_change_is_announced_once() {
    let (entry, mut changes) = entry(false);
    entry.update(|c| c.started_at_ns = Some(5));
    // Not a change of state: not announced.
    entry.update(|c| c.start_requested_at_ns = None);
    entry.record_end(ContainerEnd::Exited(ExitStatus::exited(0, 6)));
    entry.record_end(ContainerEnd::Exited(ExitStatus::exited(1, 7)));
    assert_eq!(changes.try_recv().unwrap(), change(ContainerState::Running));
    assert_eq!(changes.try_recv().unwrap(), change(ContainerState::Exited));
    assert!(changes.try_recv().is_err());
}

#[tokio::test]
async fn dropping_the_entry_ends_its_watcher() {
    let (entry, _changes) = entry(true);
    // No monitor at this state dir: the watcher finds it lost, unless
    // it is aborted first; either way it must not outlive the entry.
    entry.watch_exit();
    let handle = entry.watcher.lock().unwrap().clone().unwrap();
    drop(entry);
    for _ in 0..100 {
        if handle.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the watcher outlived its entry");
}

#[test]
fn a_listing_keeps_the_record_it_took_and_a_change_copies_only_a_shared_one() {
    let (entry, _changes) = entry(false);
    let listed = entry.snapshot();
    entry.update(|c| c.start_requested_at_ns = Some(5));
    assert_eq!(listed.start_requested_at_ns, None);
    assert_eq!(entry.snapshot().start_requested_at_ns, Some(5));

    drop(listed);
    let unshared = Arc::as_ptr(&entry.snapshot());
    entry.update(|c| c.start_requested_at_ns = Some(6));
    assert_eq!(Arc::as_ptr(&entry.snapshot()), unshared, "changed in place");
    assert_eq!(entry.get().start_requested_at_ns, Some(6));
}
