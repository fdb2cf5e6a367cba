//! Helpers shared by integration tests.

pub mod git;
pub mod tls;
