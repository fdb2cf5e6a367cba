//! Helpers shared by integration tests.

pub mod tls;
pub mod git;
