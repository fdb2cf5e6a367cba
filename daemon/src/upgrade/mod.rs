//! A/B OS upgrades: the pure lifecycle ([`machine`]), its I/O driver ([`actor`]) and the
//! `bosun upgrade` subcommands ([`commands`]), and the verified streaming
//! image install into a slot ([`install`]).

pub mod actor;
pub mod commands;
pub mod install;
pub mod machine;
pub mod pass;
