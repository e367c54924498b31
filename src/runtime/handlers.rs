//! Runtime handlers: the OCI runtimes a pod's RuntimeClass may name. The
//! default handler (the empty name, also known as "runc") is
//! `[runtime] path`; `[runtime.handlers.NAME]` adds others. Each has its own
//! `--root`, so no handler sees another's containers, and its own features,
//! probed once at start-up.

use std::sync::Arc;

use super::{OciRuntime, RuntimeFeatures};

/// The name kubelet sends for a pod without a RuntimeClass.
pub const DEFAULT_HANDLER: &str = "";
/// What the default handler is also called (containerd's and CRI-O's
/// default handler is named so), unless a configured handler takes it.
pub const DEFAULT_HANDLER_ALIAS: &str = "runc";

#[derive(Debug)]
pub struct RuntimeHandler {
    pub name: String,
    pub runtime: OciRuntime,
    pub features: RuntimeFeatures,
}

#[derive(Debug, Clone)]
pub struct RuntimeHandlers {
    /// The default first; then the configured ones by name.
    handlers: Vec<Arc<RuntimeHandler>>,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown runtime handler {name:?}: this node has {known}")]
pub struct UnknownHandler {
    pub name: String,
    known: String,
}

impl RuntimeHandlers {
    /// Probes every runtime's features, each on a blocking thread.
    /// `user_namespaces`: whether this host can make what a pod's user
    /// namespace needs ([`crate::idmap::probe`]).
    pub async fn probe(
        default: OciRuntime,
        configured: Vec<(String, OciRuntime)>,
        user_namespaces: bool,
    ) -> Self {
        let mut named = vec![(DEFAULT_HANDLER.to_string(), default)];
        named.extend(configured);
        let mut handlers = Vec::with_capacity(named.len());
        for (name, runtime) in named {
            let binary = runtime.binary().to_path_buf();
            let features =
                tokio::task::spawn_blocking(move || RuntimeFeatures::probe_or_none(&binary))
                    .await
                    .unwrap_or_default();
            let features = RuntimeFeatures {
                user_namespaces,
                ..features
            };
            tracing::info!(handler = %name, binary = %runtime.binary().display(), ?features, "runtime handler");
            handlers.push(Arc::new(RuntimeHandler {
                name,
                runtime,
                features,
            }));
        }
        Self { handlers }
    }

    /// Handlers with the features they were given, not probed (for tests).
    pub fn with_features(handlers: Vec<(String, OciRuntime, RuntimeFeatures)>) -> Self {
        Self {
            handlers: handlers
                .into_iter()
                .map(|(name, runtime, features)| {
                    Arc::new(RuntimeHandler {
                        name,
                        runtime,
                        features,
                    })
                })
                .collect(),
        }
    }

    pub fn default_handler(&self) -> &Arc<RuntimeHandler> {
        &self.handlers[0]
    }

    /// The handler a RunPodSandbox names.
    pub fn get(&self, name: &str) -> Result<&Arc<RuntimeHandler>, UnknownHandler> {
        if let Some(handler) = self.handlers.iter().find(|h| h.name == name) {
            return Ok(handler);
        }
        if name == DEFAULT_HANDLER_ALIAS {
            return Ok(self.default_handler());
        }
        Err(UnknownHandler {
            name: name.to_string(),
            known: self.describe(),
        })
    }

    /// Every handler under each name it answers to: the default once as
    /// "" and once as "runc" (unless configured otherwise).
    pub fn listed(&self) -> Vec<(&str, &RuntimeHandler)> {
        let mut listed: Vec<(&str, &RuntimeHandler)> = self
            .handlers
            .iter()
            .map(|h| (h.name.as_str(), h.as_ref()))
            .collect();
        if !self
            .handlers
            .iter()
            .any(|h| h.name == DEFAULT_HANDLER_ALIAS)
        {
            listed.insert(1, (DEFAULT_HANDLER_ALIAS, self.default_handler()));
        }
        listed
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<RuntimeHandler>> {
        self.handlers.iter()
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .listed()
            .into_iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        format!("handlers {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handlers(names: &[&str]) -> RuntimeHandlers {
        RuntimeHandlers::with_features(
            std::iter::once("")
                .chain(names.iter().copied())
                .map(|name| {
                    let runtime = OciRuntime::new(format!("/bin/{name}rt").into(), "/r".into());
                    (name.to_string(), runtime, RuntimeFeatures::default())
                })
                .collect(),
        )
    }

    #[test]
    fn default_answers_to_empty_and_runc() {
        let handlers = handlers(&["fast"]);
        assert_eq!(handlers.get("").unwrap().name, "");
        assert_eq!(handlers.get("runc").unwrap().name, "");
        assert_eq!(handlers.get("fast").unwrap().name, "fast");
        let err = handlers.get("kata").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown runtime handler "kata": this node has handlers "", "runc", "fast""#
        );
        let names: Vec<&str> = handlers.listed().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["", "runc", "fast"]);
    }

    #[test]
    fn a_configured_runc_replaces_the_alias() {
        let handlers = handlers(&["runc"]);
        assert_eq!(
            handlers.get("runc").unwrap().runtime.binary(),
            std::path::Path::new("/bin/runcrt")
        );
        let names: Vec<&str> = handlers.listed().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["", "runc"]);
    }
}
