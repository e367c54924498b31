//! `Exec`, `Attach` and `PortForward`: validate the request as kubelet's
//! reference server does, then hand back a single-use URL on the
//! streaming server, which does the rest.

use tonic::Status;

use super::proto::*;
use super::{required, status_of, validate, Services};
use crate::container::ContainerState;
use crate::sandbox::SandboxState;
use crate::streaming::backend::{AttachTarget, ExecTarget};
use crate::streaming::{Session, Streams};

/// The command of an exec, all arguments together: a pending session is
/// held in memory until used, and a command line beyond Linux's
/// per-argument limit could not run anyway.
const MAX_CMD_BYTES: usize = 128 << 10;

pub async fn exec(services: &Services, request: ExecRequest) -> Result<ExecResponse, Status> {
    let streams = streams(request.stdin, request.stdout, request.stderr, request.tty)?;
    if request.cmd.is_empty() {
        return Err(required("cmd"));
    }
    let cmd_bytes: usize = request.cmd.iter().map(|a| a.len() + 1).sum();
    if cmd_bytes > MAX_CMD_BYTES {
        return Err(Status::invalid_argument(format!(
            "cmd has {cmd_bytes} bytes; at most {MAX_CMD_BYTES} are accepted"
        )));
    }
    let container_id = running_container(services, &request.container_id)?;
    let session = Session::Exec {
        target: ExecTarget {
            container_id,
            cmd: request.cmd,
            tty: request.tty,
        },
        streams,
    };
    let url = services.streaming.url_for(session).map_err(status_of)?;
    Ok(ExecResponse { url })
}

pub async fn attach(services: &Services, request: AttachRequest) -> Result<AttachResponse, Status> {
    let streams = streams(request.stdin, request.stdout, request.stderr, request.tty)?;
    let container_id = running_container(services, &request.container_id)?;
    let session = Session::Attach {
        target: AttachTarget {
            container_id,
            tty: request.tty,
        },
        streams,
    };
    let url = services.streaming.url_for(session).map_err(status_of)?;
    Ok(AttachResponse { url })
}

pub async fn port_forward(
    services: &Services,
    request: PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let pod = services.sandboxes.get(id).map_err(status_of)?.get();
    if pod.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let ports = request
        .port
        .iter()
        .map(|&port| {
            u16::try_from(port)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| Status::invalid_argument(format!("port {port} is not in 1..=65535")))
        })
        .collect::<Result<Vec<u16>, Status>>()?;
    if ports.len() > 64 {
        return Err(Status::invalid_argument("at most 64 ports per request"));
    }
    let session = Session::PortForward {
        pod_sandbox_id: pod.id,
        ports,
    };
    let url = services.streaming.url_for(session).map_err(status_of)?;
    Ok(PortForwardResponse { url })
}

/// kubelet's checks: some stream, and no stderr with a terminal (the
/// terminal carries both).
fn streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<Streams, Status> {
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    Ok(Streams {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

/// The full ID of the running container `id` names.
fn running_container(services: &Services, id: &str) -> Result<String, Status> {
    let id = validate::id(id, "container_id")?;
    let container = services.containers.get(id).map_err(status_of)?.get();
    if container.state() != ContainerState::Running {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            container.id
        )));
    }
    Ok(container.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flags_are_checked_as_kubelet_does() {
        assert!(streams(false, false, false, false).is_err());
        let err = streams(false, true, true, true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(streams(true, true, false, true).is_ok());
        assert!(streams(false, false, true, false).is_ok());
    }
}
