//! The single integration test binary; each module is one area.

mod keys;
mod render_systemd;
