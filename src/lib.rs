//! Wharf: a Kubernetes CRI runtime.
//!
//! Layers, top to bottom (imports point downward only):
//! - edges: `cri` (gRPC), [`streaming`] (exec/attach/port-forward sessions);
//! - services: [`image`], [`sandbox`], [`container`], [`stats`], [`events`];
//! - resources: [`store`], [`runtime`], [`network`], [`cgroup`],
//!   `image::{registry, content, layers, unpack}`;
//! - the per-container [`monitor`] uses only `runtime`, `cgroup` and `store`;
//! - leaves any layer may use: [`api`], [`config`], [`error`], [`sync`],
//!   [`undo`], [`logging`], [`notify`];
//! - [`reload`] (SIGHUP) reaches into the services the daemon assembles.

// `unsafe` only where a function says `#[allow(unsafe_code)]` (sys,
// monitor::sys, the xattr call of image::unpack, idmap), each block with its
// SAFETY comment.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod events;
pub mod idmap;
pub mod image;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod notify;
pub mod reload;
pub mod runtime;
pub mod sandbox;
pub mod stats;
pub mod store;
pub mod streaming;
pub mod sync;
pub mod sys;
pub mod timing;
pub mod undo;
