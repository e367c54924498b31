//! Images: pull, list, status, remove, and the storage behind them.

pub mod digest;
pub mod reference;
pub mod registry;
pub mod unpack;
