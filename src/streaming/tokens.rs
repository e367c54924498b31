//! Pending sessions behind single-use tokens, as kubelet's reference
//! streaming server keeps them (`requestCache`): unguessable, consumed by
//! the first request that presents them, expiring, and capped in number.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backend::{AttachTarget, ExecTarget};

/// kubelet's `maxInFlight`: more pending sessions are refused.
pub const MAX_PENDING: usize = 1000;
/// Random bytes in a token (kubelet uses 6; more costs nothing).
const TOKEN_BYTES: usize = 16;

/// Which client streams a session wants, as its CRI request said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    Exec {
        target: ExecTarget,
        streams: Streams,
    },
    Attach {
        target: AttachTarget,
        streams: Streams,
    },
    PortForward {
        pod_sandbox_id: String,
        ports: Vec<u16>,
    },
}

impl Session {
    /// The URL path segment that serves this kind of session.
    pub fn route(&self) -> &'static str {
        match self {
            Session::Exec { .. } => "exec",
            Session::Attach { .. } => "attach",
            Session::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("too many pending streaming requests ({MAX_PENDING}); retry later")]
    TooMany,
    #[error("reading /dev/urandom for a streaming token")]
    Random(#[source] std::io::Error),
}

impl crate::error::Classify for TokenError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            TokenError::TooMany => crate::error::Kind::ResourceExhausted,
            TokenError::Random(_) => crate::error::Kind::Internal,
        }
    }
}

pub struct Tokens {
    /// Of tokens issued from now on; see [`Tokens::set_lifetime`].
    lifetime: Mutex<Duration>,
    max_pending: usize,
    pending: Mutex<HashMap<String, (Instant, Session)>>,
}

impl Tokens {
    pub fn new(lifetime: Duration, max_pending: usize) -> Self {
        Tokens {
            lifetime: Mutex::new(lifetime),
            max_pending,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `session` and returns its token.
    pub fn insert(&self, session: Session) -> Result<String, TokenError> {
        let token = random_token()?;
        let lifetime = *self.lifetime.lock().unwrap();
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap();
        pending.retain(|_, (expires, _)| *expires > now);
        if pending.len() >= self.max_pending {
            return Err(TokenError::TooMany);
        }
        pending.insert(token.clone(), (now + lifetime, session));
        Ok(token)
    }

    /// Tokens issued from now on expire after `lifetime`; those already
    /// issued keep their expiry.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap() = lifetime;
    }

    /// The session of `token`, removed: a token works once. `None` when
    /// unknown, used or expired.
    pub fn consume(&self, token: &str) -> Option<Session> {
        let (expires, session) = self.pending.lock().unwrap().remove(token)?;
        (expires > Instant::now()).then_some(session)
    }
}

fn random_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(TokenError::Random)?;
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> Session {
        Session::PortForward {
            pod_sandbox_id: "pod".into(),
            ports: vec![80],
        }
    }

    #[test]
    fn tokens_are_single_use_and_distinct() {
        let tokens = Tokens::new(Duration::from_secs(60), 10);
        let a = tokens.insert(forward()).unwrap();
        let b = tokens.insert(forward()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(tokens.consume(&a), Some(forward()));
        assert_eq!(tokens.consume(&a), None);
        assert_eq!(tokens.consume("made-up"), None);
        assert!(tokens.consume(&b).is_some());
    }

    #[test]
    fn a_new_lifetime_applies_to_tokens_issued_after_it() {
        let tokens = Tokens::new(Duration::from_secs(60), 10);
        let before = tokens.insert(forward()).unwrap();
        tokens.set_lifetime(Duration::ZERO);
        let after = tokens.insert(forward()).unwrap();
        assert_eq!(tokens.consume(&after), None, "issued with no lifetime");
        assert_eq!(tokens.consume(&before), Some(forward()), "keeps its expiry");
    }

    #[test]
    fn tokens_expire_and_the_cache_is_capped() {
        let tokens = Tokens::new(Duration::ZERO, 2);
        let expired = tokens.insert(forward()).unwrap();
        assert_eq!(tokens.consume(&expired), None);

        let tokens = Tokens::new(Duration::from_secs(60), 2);
        tokens.insert(forward()).unwrap();
        tokens.insert(forward()).unwrap();
        assert!(matches!(tokens.insert(forward()), Err(TokenError::TooMany)));

        // Expired entries do not count against the cap.
        let tokens = Tokens::new(Duration::ZERO, 1);
        tokens.insert(forward()).unwrap();
        tokens.insert(forward()).unwrap();
    }
}
