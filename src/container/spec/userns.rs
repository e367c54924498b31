//! A container in its pod's own user namespace: it joins the pinned
//! namespace by path, and the spec carries the mappings too.

use std::path::PathBuf;

use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType};

use super::SpecError;
use crate::api;

/// A pod's pinned user namespace and the mappings it was made with (runc
/// 1.1 wants them also when it joins a user namespace by path: it chowns
/// what it creates to the container's root on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserns {
    pub path: PathBuf,
    pub mappings: crate::idmap::UsernsMappings,
}

/// Lists the user namespace first (runc joins it first whatever the
/// order) and sets the mappings.
pub(super) fn join(linux: &mut Linux, namespaces: &mut Vec<LinuxNamespace>, userns: &PodUserns) {
    let mut user = LinuxNamespace::default();
    user.set_typ(LinuxNamespaceType::User);
    user.set_path(Some(userns.path.clone()));
    namespaces.insert(0, user);
    linux.set_uid_mappings(Some(vec![id_mapping(&userns.mappings.uids)]));
    linux.set_gid_mappings(Some(vec![id_mapping(&userns.mappings.gids)]));
}

/// A container is in its pod's user namespace: its own `userns_options`
/// (kubelet copies the pod's) may only say the same.
pub(super) fn check(
    security: Option<&api::LinuxContainerSecurityContext>,
    pod_has_userns: bool,
) -> Result<(), SpecError> {
    let mode = security
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
        .map(|u| u.mode);
    match mode.map(api::NamespaceMode::try_from) {
        None => Ok(()),
        Some(Ok(api::NamespaceMode::Node)) if !pod_has_userns => Ok(()),
        Some(Ok(api::NamespaceMode::Pod)) if pod_has_userns => Ok(()),
        Some(_) => Err(SpecError::InvalidValue {
            field: "namespace_options.userns_options.mode",
            value: mode.unwrap_or_default().to_string(),
            reason: format!(
                "a container is in its pod's user namespace, which is {}",
                if pod_has_userns {
                    "the pod's own (POD)"
                } else {
                    "the host's (NODE)"
                }
            ),
        }),
    }
}

fn id_mapping(range: &crate::idmap::IdRange) -> oci_spec::runtime::LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(range.container_id)
        .host_id(range.host_id)
        .size(range.length)
        .build()
        .unwrap_or_default()
}
