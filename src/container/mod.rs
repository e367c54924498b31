//! (being written)
pub mod seccomp;
pub mod spec;
pub mod user;
