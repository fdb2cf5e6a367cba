//! A/B OS upgrades: the pure lifecycle ([`machine`]), its I/O driver ([`actor`]) and the
//! `bosun upgrade` subcommands ([`commands`]).

pub mod actor;
pub mod commands;
pub mod machine;
