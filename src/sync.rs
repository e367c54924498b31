//! Small concurrency helpers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async lock per key, created on demand and forgotten when nobody
/// holds or waits for it, so that work on the same key (a blob, an image
/// name) is serialised while different keys proceed in parallel.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Weak<AsyncMutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, weak| weak.strong_count() > 0);
            match locks.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    locks.insert(key.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// Counted claims on keys: what is claimed must not be garbage-collected.
pub struct Leases<K> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Default for Leases<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Leases<K> {
    pub fn acquire(self: &Arc<Self>, keys: impl IntoIterator<Item = K>) -> Lease<K> {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        Lease {
            leases: Arc::clone(self),
            keys,
        }
    }

    /// Runs `f` with the set of leased keys held still: no lease can be
    /// taken while `f` decides what to delete.
    pub fn while_frozen<R>(&self, f: impl FnOnce(&dyn Fn(&K) -> bool) -> R) -> R {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(&|key| counts.contains_key(key))
    }
}

pub struct Lease<K: Eq + Hash + Clone> {
    leases: Arc<Leases<K>>,
    keys: Vec<K>,
}

impl<K: Eq + Hash + Clone> Drop for Lease<K> {
    fn drop(&mut self) {
        let mut counts = self.leases.counts.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_is_serialised_and_forgotten() {
        let locks = KeyedLocks::<String>::default();
        let guard = locks.lock(&"a".to_string()).await;
        let other = locks.lock(&"b".to_string()).await;
        let waiter = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            locks.lock(&"a".to_string()),
        )
        .await;
        assert!(waiter.is_err(), "a second lock on the same key must wait");
        drop((guard, other));
        let _again = locks.lock(&"a".to_string()).await;
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }

    #[test]
    fn leases_count_and_release() {
        let leases = Arc::new(Leases::<u32>::default());
        let a = leases.acquire([1, 2]);
        let b = leases.acquire([2]);
        drop(a);
        assert!(leases.while_frozen(|held| !held(&1) && held(&2)));
        drop(b);
        assert!(leases.while_frozen(|held| !held(&2)));
    }
}

/// Unique names, reserved before the object they name exists and released
/// if creating it fails (kubelet retries with the same name).
#[derive(Default)]
pub struct Registrar {
    names: Mutex<HashMap<String, String>>,
}

/// The name is taken by another object.
#[derive(Debug, thiserror::Error)]
#[error("name {name:?} is reserved for {holder}")]
pub struct NameTaken {
    pub name: String,
    pub holder: String,
}

impl Registrar {
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), NameTaken> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        match names.get(name) {
            Some(holder) if holder != id => Err(NameTaken {
                name: name.to_string(),
                holder: holder.clone(),
            }),
            _ => {
                names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// Why [`by_id_or_prefix`] found nothing.
pub enum LookupMiss {
    NotFound,
    /// A prefix that fits more than one ID.
    Ambiguous,
}

/// The object with ID `key`, or the only one whose ID starts with it (as
/// crictl shows truncated IDs).
pub fn by_id_or_prefix<T>(
    objects: &HashMap<String, Arc<T>>,
    key: &str,
) -> Result<Arc<T>, LookupMiss> {
    if let Some(object) = objects.get(key) {
        return Ok(Arc::clone(object));
    }
    let mut matches = objects
        .iter()
        .filter(|(id, _)| !key.is_empty() && id.starts_with(key));
    match (matches.next(), matches.next()) {
        (Some((_, object)), None) => Ok(Arc::clone(object)),
        (Some(_), Some(_)) => Err(LookupMiss::Ambiguous),
        (None, _) => Err(LookupMiss::NotFound),
    }
}

/// A random 64-hex-character ID, as containerd and CRI-O make them.
pub fn new_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // Unreachable on Linux; still unique enough for IDs (not secrets).
        use sha2::Digest;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes = sha2::Sha256::digest(seed.as_bytes()).into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod registrar_tests {
    use super::*;

    #[test]
    fn names_are_unique_until_released() {
        let registrar = Registrar::default();
        registrar.reserve("pod_ns_uid_0", "a").unwrap();
        registrar.reserve("pod_ns_uid_0", "a").unwrap();
        let taken = registrar.reserve("pod_ns_uid_0", "b").unwrap_err();
        assert_eq!(taken.holder, "a");
        registrar.release("pod_ns_uid_0");
        registrar.reserve("pod_ns_uid_0", "b").unwrap();
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

/// An error that can tell that a task it was waiting on failed (panicked
/// or was aborted): work sent off the caller's task then comes back as one
/// `Result` of that error, with what the work was.
pub trait TaskFailure: Sized + Send + 'static {
    fn task_failed(what: &'static str, error: tokio::task::JoinError) -> Self;

    /// `work` on a blocking thread (file system, fsyncs, namespaces), in
    /// the current tracing span, so that it never holds an async worker.
    /// It is spawned at once; the future only collects its result.
    fn blocking<T, W>(
        what: &'static str,
        work: impl FnOnce() -> Result<T, W> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, Self>> + Send
    where
        T: Send + 'static,
        W: Send + 'static,
        Self: From<W>,
    {
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || span.in_scope(work));
        collect(what, task)
    }

    /// `work` as a task of its own, in the current tracing span: it runs to
    /// completion even if the caller goes away half-way (a cancelled
    /// request), which a half-done network set-up or teardown must.
    fn to_completion<T, W>(
        what: &'static str,
        work: impl std::future::Future<Output = Result<T, W>> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, Self>> + Send
    where
        T: Send + 'static,
        W: Send + 'static,
        Self: From<W>,
    {
        let task = tokio::spawn(tracing::Instrument::in_current_span(work));
        collect(what, task)
    }
}

async fn collect<T, W, E: TaskFailure + From<W>>(
    what: &'static str,
    task: tokio::task::JoinHandle<Result<T, W>>,
) -> Result<T, E> {
    match task.await {
        Ok(result) => result.map_err(E::from),
        Err(error) => Err(E::task_failed(what, error)),
    }
}

#[cfg(test)]
mod task_failure_tests {
    use super::TaskFailure;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Work(&'static str),
        Task(&'static str, bool),
    }

    impl TaskFailure for TestError {
        fn task_failed(what: &'static str, error: tokio::task::JoinError) -> Self {
            TestError::Task(what, error.is_panic())
        }
    }

    #[derive(Debug)]
    struct Inner;

    impl From<Inner> for TestError {
        fn from(_: Inner) -> Self {
            TestError::Work("inner")
        }
    }

    #[tokio::test]
    async fn blocking_work_comes_back_as_one_result() {
        assert_eq!(
            TestError::blocking("adding", || Ok::<_, Inner>(2 + 2)).await,
            Ok(4)
        );
        let failed = TestError::blocking("failing", || Err::<(), _>(Inner)).await;
        assert_eq!(failed, Err(TestError::Work("inner")));
        let panicked = TestError::blocking("panicking", || -> Result<(), Inner> {
            panic!("on purpose")
        })
        .await;
        assert_eq!(panicked, Err(TestError::Task("panicking", true)));
    }

    #[tokio::test]
    async fn work_to_completion_outlives_its_caller() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let work = TestError::to_completion("finishing", async move {
            let _ = wait.await;
            let _ = done.send(());
            Ok::<_, TestError>(())
        });
        // The caller goes away before the work is done: it still finishes.
        drop(work);
        go.send(()).unwrap();
        finished.await.expect("the work ran to its end");
    }
}
