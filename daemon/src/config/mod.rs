//! The config model: layer files → spanned YAML trees → merged tree → typed [`NodeConfig`].

pub mod model;

pub use model::*;
