//! The `health:` block: timing of the health gate (`timeout`, `interval`, `successes`), which
//! changes it gates (`gate`) and the list of `checks` (each converted by [`super::checks`]).
//! A bad value is reported and its default kept.

use super::checks::check;
use super::syntax::parse_duration;
use super::tree::{parse_uint, text};
use super::Cx;
use crate::config::model::{HealthConfig, HealthGate};
use crate::config::yaml::{Kind, Node};

/// Converts the `health:` block `h`.
pub(super) fn health(cx: &mut Cx, h: &Node) -> HealthConfig {
    let mut cfg = HealthConfig::default();
    for (key, slot) in [
        ("timeout", &mut cfg.timeout),
        ("interval", &mut cfg.interval),
    ] {
        if let Some(n) = h.get(key) {
            match parse_duration(&text(n).unwrap_or_default()) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => cx.err(
                    &n.pos,
                    &format!("health.{key}"),
                    "expected a duration greater than zero",
                ),
                Err(e) => cx.err(&n.pos, &format!("health.{key}"), e),
            }
        }
    }
    if let Some(n) = h.get("successes") {
        match parse_uint(n) {
            Ok(v @ 1..=100) => cfg.successes = v as u32,
            _ => cx.err(
                &n.pos,
                "health.successes",
                "expected a number of consecutive successes from 1 to 100",
            ),
        }
    }
    if let Some(n) = h.get("gate") {
        cfg.gate = match text(n).unwrap_or_default().as_str() {
            "k3s" => HealthGate::K3s,
            "all" => HealthGate::All,
            "none" => HealthGate::None,
            other => {
                cx.err(
                    &n.pos,
                    "health.gate",
                    format!("{other:?}; expected one of \"k3s\", \"all\", \"none\""),
                );
                HealthGate::K3s
            }
        };
    }
    if let Some(Kind::Seq(items)) = h.get("checks").map(|n| &n.kind) {
        for (i, it) in items.iter().enumerate() {
            if let Some(c) = check(cx, it, &format!("health.checks[{i}]")) {
                cfg.checks.push(c);
            }
        }
    }
    cfg
}
