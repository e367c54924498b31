//! Images: pull, list, status, remove, and the storage behind them.

pub mod content;
pub mod digest;
pub mod layers;
pub mod manifest;
pub mod metadata;
pub mod reference;
pub mod registry;
pub mod unpack;
