//! Wharf: a Kubernetes CRI runtime.
//!
//! Layers, top to bottom (imports point downward only):
//! - edges: `cri` (gRPC);
//! - services: [`image`];
//! - resources: `store`, `image::{registry, content, unpack}`;
//! - leaves any layer may use: `config`, [`error`].

#![deny(unsafe_code)]

pub mod error;
pub mod image;
