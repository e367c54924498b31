//! The CRI v1 messages and gRPC service definitions, generated from
//! `proto/api.proto`.
//!
//! The messages are plain data, so the services below the gRPC edge take
//! the request structs they need (a `ContainerConfig`, a `PodSandboxConfig`)
//! as their input instead of mirroring ~100 fields in look-alike types; only
//! `cri/` touches the tonic service traits and `Status`.

#![allow(clippy::all, missing_docs, rustdoc::all)]

tonic::include_proto!("runtime.v1");
