//! Helpers shared by integration tests.

pub mod git;
pub mod image_server;
pub mod tls;
