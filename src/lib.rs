//! Wharf: a Kubernetes CRI runtime.
//!
//! Layers, top to bottom (imports point downward only):
//! - edges: `cri` (gRPC);
//! - services: [`image`];
//! - resources: [`store`], `image::{registry, content, layers, unpack}`;
//! - leaves any layer may use: [`config`], [`error`], [`sync`].

#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod image;
pub mod store;
pub mod sync;
