//! Per-step timings of the lifecycle calls, at debug level: each step is a
//! `step` span (nested under the RPC's span) that logs its duration when it
//! ends. `RUST_LOG=wharf=debug` shows where a call's milliseconds go; at
//! the default level a step costs a disabled span and one clock read.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::Instrument;

/// Runs `future` as step `name`; logs its wall time (waits included).
pub async fn step<F: Future>(name: &'static str, future: F) -> F::Output {
    let span = tracing::debug_span!("step", name);
    let started = Instant::now();
    let output = future.instrument(span.clone()).await;
    log_done(&span, name, started);
    output
}

/// Runs `work` as step `name` on the calling thread; logs its wall time.
pub fn step_sync<T>(name: &'static str, work: impl FnOnce() -> T) -> T {
    let span = tracing::debug_span!("step", name);
    let started = Instant::now();
    let output = span.in_scope(work);
    log_done(&span, name, started);
    output
}

/// Logs step `name`, nested in the current span, that another process
/// timed (the runtime, run by the monitor).
pub fn record_step(name: &'static str, elapsed: Duration) {
    let span = tracing::debug_span!("step", name);
    log_elapsed(&span, name, elapsed);
}

fn log_done(span: &tracing::Span, name: &'static str, started: Instant) {
    log_elapsed(span, name, started.elapsed());
}

fn log_elapsed(span: &tracing::Span, name: &'static str, elapsed: Duration) {
    tracing::debug!(
        parent: span,
        elapsed_us = elapsed.as_micros() as u64,
        "{name} done"
    );
}
