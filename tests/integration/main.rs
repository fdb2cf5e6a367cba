mod apply_crash;
mod apply_fs;
#[path = "support/apply.rs"]
mod support_apply;
