//! One way to roll back an operation that failed half-way: each step that
//! leaves something behind pushes how to take it back; on failure the steps
//! run in reverse, and whichever of them fail are reported beside the
//! original error (youki's `CreateContainerError(run_err, cleanup_err)`),
//! not only logged.
//!
//! ```ignore
//! let mut undo = Undo::default();
//! let result = async {
//!     mount(&target)?;
//!     undo.push("unmounting the rootfs", || unmount(&target));
//!     network.add(&pod).await?;
//!     undo.push_async("deleting the pod network", || network.del(&pod));
//!     record()
//! }.await;
//! undo.finish(result).await
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;
type BoxFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

enum Step<'a> {
    Now(Box<dyn FnOnce() -> Result<(), BoxError> + Send + 'a>),
    Later(Box<dyn FnOnce() -> BoxFuture<'a> + Send + 'a>),
}

/// Steps to take back, newest last. Dropped without [`Undo::finish`] or
/// [`Undo::finish_now`] (a panic, a future dropped half-way), it runs the
/// synchronous steps and logs the asynchronous ones it could not run.
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<(&'static str, Step<'a>)>,
}

impl<'a> Undo<'a> {
    /// `what` names the step in reports ("unmounting the rootfs").
    pub fn push<E>(&mut self, what: &'static str, step: impl FnOnce() -> Result<(), E> + Send + 'a)
    where
        E: StdError + Send + Sync + 'static,
    {
        let step = move || step().map_err(BoxError::from);
        self.steps.push((what, Step::Now(Box::new(step))));
    }

    pub fn push_async<E, F>(&mut self, what: &'static str, step: impl FnOnce() -> F + Send + 'a)
    where
        E: StdError + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'a,
    {
        let step = move || -> BoxFuture<'a> {
            let future = step();
            Box::pin(async move { future.await.map_err(BoxError::from) })
        };
        self.steps.push((what, Step::Later(Box::new(step))));
    }

    /// On success forgets the steps; on failure runs them in reverse and
    /// returns the error with the failures of any of them.
    pub async fn finish<T, E: Undone>(mut self, result: Result<T, E>) -> Result<T, E> {
        let error = match result {
            Ok(value) => {
                self.steps.clear();
                return Ok(value);
            }
            Err(error) => error,
        };
        let mut failures = Vec::new();
        while let Some((what, step)) = self.steps.pop() {
            let outcome = match step {
                Step::Now(step) => step(),
                Step::Later(step) => step().await,
            };
            record_failure(&mut failures, what, outcome);
        }
        Err(attach(error, failures))
    }

    /// [`Undo::finish`] where nothing can be awaited: only synchronous steps
    /// may have been pushed.
    pub fn finish_now<T, E: Undone>(mut self, result: Result<T, E>) -> Result<T, E> {
        let error = match result {
            Ok(value) => {
                self.steps.clear();
                return Ok(value);
            }
            Err(error) => error,
        };
        let mut failures = Vec::new();
        while let Some((what, step)) = self.steps.pop() {
            let outcome = match step {
                Step::Now(step) => step(),
                Step::Later(_) => Err("an asynchronous step cannot run here".into()),
            };
            record_failure(&mut failures, what, outcome);
        }
        Err(attach(error, failures))
    }
}

fn record_failure(
    failures: &mut Vec<CleanupFailure>,
    step: &'static str,
    outcome: Result<(), BoxError>,
) {
    if let Err(error) = outcome {
        failures.push(CleanupFailure { step, error });
    }
}

fn attach<E: Undone>(error: E, failures: Vec<CleanupFailure>) -> E {
    if failures.is_empty() {
        return error;
    }
    for failure in &failures {
        tracing::error!(step = failure.step, error = %crate::error::chain(failure.error.as_ref()), "rolling back a failed operation");
    }
    error.with_cleanup_failures(CleanupFailures(failures))
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            match step {
                Step::Now(step) => {
                    if let Err(e) = step() {
                        tracing::error!(step = what, error = %crate::error::chain(e.as_ref()), "rolling back an abandoned operation");
                    }
                }
                Step::Later(_) => {
                    tracing::error!(step = what, "an abandoned operation left this undone");
                }
            }
        }
    }
}

/// An error that can carry the failures of the rollback that followed it.
pub trait Undone: Sized {
    fn with_cleanup_failures(self, failures: CleanupFailures) -> Self;
}

/// One rollback step that failed.
#[derive(Debug)]
pub struct CleanupFailure {
    pub step: &'static str,
    pub error: BoxError,
}

/// What a rollback could not take back, reported beside the error that
/// caused it.
#[derive(Debug)]
pub struct CleanupFailures(pub Vec<CleanupFailure>);

impl fmt::Display for CleanupFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{}: {}",
                failure.step,
                crate::error::chain(failure.error.as_ref())
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("{0}")]
        Failed(&'static str),
        #[error("{error} (rollback: {cleanup})")]
        Undone {
            error: Box<TestError>,
            cleanup: CleanupFailures,
        },
    }

    impl Undone for TestError {
        fn with_cleanup_failures(self, cleanup: CleanupFailures) -> Self {
            TestError::Undone {
                error: Box::new(self),
                cleanup,
            }
        }
    }

    #[tokio::test]
    async fn steps_run_in_reverse_and_failures_are_reported_beside_the_error() {
        let ran = Mutex::new(Vec::new());
        let mut undo = Undo::default();
        undo.push("first", || {
            ran.lock().unwrap().push("first");
            Ok::<_, TestError>(())
        });
        undo.push_async("second", || async {
            ran.lock().unwrap().push("second");
            Err(TestError::Failed("second broke"))
        });
        undo.push("third", || {
            ran.lock().unwrap().push("third");
            Ok::<_, TestError>(())
        });
        let result: Result<(), _> = undo.finish(Err(TestError::Failed("the operation"))).await;
        assert_eq!(*ran.lock().unwrap(), ["third", "second", "first"]);
        assert_eq!(
            result.unwrap_err().to_string(),
            "the operation (rollback: second: second broke)"
        );
    }

    #[tokio::test]
    async fn success_and_clean_rollbacks_change_nothing() {
        let ran = Mutex::new(0);
        let mut undo = Undo::default();
        undo.push("count", || {
            *ran.lock().unwrap() += 1;
            Ok::<_, TestError>(())
        });
        assert_eq!(undo.finish(Ok::<_, TestError>(7)).await.unwrap(), 7);
        assert_eq!(*ran.lock().unwrap(), 0);

        let mut undo = Undo::default();
        undo.push("count", || {
            *ran.lock().unwrap() += 1;
            Ok::<_, TestError>(())
        });
        let error = undo
            .finish_now(Err::<(), _>(TestError::Failed("plain")))
            .unwrap_err();
        assert_eq!(error.to_string(), "plain");
        assert_eq!(*ran.lock().unwrap(), 1);
    }

    #[test]
    fn an_abandoned_rollback_runs_its_synchronous_steps() {
        let ran = Mutex::new(false);
        {
            let mut undo = Undo::default();
            undo.push("mark", || {
                *ran.lock().unwrap() = true;
                Ok::<_, TestError>(())
            });
        }
        assert!(*ran.lock().unwrap());
    }
}
