//! The `rollout:` block of the Git config (fleet policy): waves, canary, maintenance windows,
//! the lock's slots and group, drain settings, canary halt, and the lock TTL.
//!
//! [`parse`] reads it from the merged config tree (canonical snake_case keys) and reports every
//! bad value as an error naming the file, line:column and field (`rollout.waves[1].percent`)
//! with what was expected; a bad value keeps its default, and the caller rejects a config with
//! any error, as for every other block. Pure.
//!
//! ```yaml
//! rollout:
//!   group: edge                 # lock group; Lease names are bosun-<group>-<i>
//!   canary: false               # set true in a group or node layer to go first
//!   waves: [{after: 0s, percent: 5}, {after: 30m, percent: 25}, {after: 2h, percent: 100}]
//!   window: {days: [sat, sun], start: "02:00", length: 4h, timezone: UTC}   # or a list
//!   max_unavailable: 1
//!   drain_on_restart: false
//!   drain: {timeout: 10m}
//!   halt_after_failures: 1      # 0: never halt
//!   waves_for_all: false
//!   lock_ttl: 1h
//! ```

use std::time::Duration;

use crate::config::convert::parse_duration;
use crate::config::yaml::{Kind, Node, Pos};
use crate::config::Diagnostic;

use super::window::{Timezone, Weekday, Window};

/// One wave: `percent` of the fleet (cumulative, by position) may start `after` the commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wave {
    /// Delay after the committer time of the commit that introduced the change.
    pub after: Duration,
    /// Cumulative share of the fleet in this wave and the ones before, in (0, 100].
    pub percent: f64,
}

/// The typed `rollout:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Waves in order of `after` (cumulative percentages strictly increasing, the last 100).
    /// Empty: every node may start at the commit time.
    pub waves: Vec<Wave>,
    /// A canary starts at the commit time, before every wave.
    pub canary: bool,
    /// Weekly maintenance windows; empty: always open.
    pub windows: Vec<Window>,
    /// Slots of the group's semaphore (nodes disrupted at once).
    pub max_unavailable: u32,
    /// The lock group (FleetLock group; Lease names `bosun-<group>-<i>`).
    pub group: String,
    /// Drain before a k3s restart too (reboots always drain).
    pub drain_on_restart: bool,
    /// Give up draining after this long: uncordon, release, back off.
    pub drain_timeout: Duration,
    /// Hold when this many nodes failed the commit; 0 never holds.
    pub halt_after_failures: u32,
    /// Apply waves to non-disruptive changes too.
    pub waves_for_all: bool,
    /// A slot whose holder has not renewed for this long (on the local clock) may be broken.
    pub lock_ttl: Duration,
}

/// Default `rollout.max_unavailable`.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;
/// Default `rollout.group`.
pub const DEFAULT_GROUP: &str = "default";
/// Default `rollout.drain.timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `rollout.halt_after_failures`.
pub const DEFAULT_HALT_AFTER_FAILURES: u32 = 1;
/// Default `rollout.lock_ttl`.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(3600);
/// Shortest `rollout.lock_ttl`. The daemon renews a held slot every 5 s at the latest (also
/// while a long step such as a k3s restart or an image download runs), and at a third of the
/// TTL; 15 s leaves three renewals before another node may break the slot.
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(15);
/// Largest `rollout.max_unavailable` (one Lease per slot is scanned when taking one).
pub const MAX_SLOTS: u32 = 100;

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            waves: Vec::new(),
            canary: false,
            windows: Vec::new(),
            max_unavailable: DEFAULT_MAX_UNAVAILABLE,
            group: DEFAULT_GROUP.to_string(),
            drain_on_restart: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            halt_after_failures: DEFAULT_HALT_AFTER_FAILURES,
            waves_for_all: false,
            lock_ttl: DEFAULT_LOCK_TTL,
        }
    }
}

/// The keys of `rollout:` (for `config::spec` and for unknown-key warnings here).
pub const KEYS: &[&str] = &[
    "waves",
    "canary",
    "window",
    "max_unavailable",
    "group",
    "drain_on_restart",
    "drain",
    "halt_after_failures",
    "waves_for_all",
    "lock_ttl",
];

/// Collects diagnostics for one block.
struct Cx<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos.clone(), field, msg));
    }
}

/// Reads the `rollout:` block `n` (a mapping with canonical keys). Every problem is pushed to
/// `diags` as an error; bad values keep their defaults. Pure.
pub fn parse(n: &Node, diags: &mut Vec<Diagnostic>) -> RolloutConfig {
    let mut cx = Cx { diags };
    let mut cfg = RolloutConfig::default();
    let Some(entries) = n.as_map() else {
        if !matches!(n.kind, Kind::Null) {
            cx.err(
                &n.pos,
                "rollout",
                format!("expected a mapping, found {}", n.kind_name()),
            );
        }
        return cfg;
    };
    for e in entries {
        let v = &e.value;
        let field = format!("rollout.{}", e.key);
        match e.key.as_str() {
            "waves" => cfg.waves = waves(&mut cx, v),
            "canary" => set(&mut cfg.canary, boolean(&mut cx, v, &field)),
            "window" => cfg.windows = windows(&mut cx, v),
            "max_unavailable" => set(
                &mut cfg.max_unavailable,
                uint(&mut cx, v, &field, 1, MAX_SLOTS),
            ),
            "group" => set(&mut cfg.group, group(&mut cx, v)),
            "drain_on_restart" => set(&mut cfg.drain_on_restart, boolean(&mut cx, v, &field)),
            "drain" => drain(&mut cx, v, &mut cfg),
            "halt_after_failures" => set(
                &mut cfg.halt_after_failures,
                uint(&mut cx, v, &field, 0, 10_000),
            ),
            "waves_for_all" => set(&mut cfg.waves_for_all, boolean(&mut cx, v, &field)),
            "lock_ttl" => {
                if let Some(d) = duration(&mut cx, v, &field) {
                    if d < MIN_LOCK_TTL {
                        cx.err(
                            &v.pos,
                            &field,
                            format!("expected at least {MIN_LOCK_TTL:?}"),
                        );
                    } else {
                        cfg.lock_ttl = d;
                    }
                }
            }
            other => cx.err(
                &e.key_pos,
                &field,
                format!("unknown key {other:?}; expected one of {}", KEYS.join(", ")),
            ),
        }
    }
    cfg
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn text(n: &Node) -> Option<&str> {
    match &n.kind {
        Kind::Scalar(s) => Some(s.value.as_str()),
        _ => None,
    }
}

fn boolean(cx: &mut Cx, n: &Node, field: &str) -> Option<bool> {
    let t = text(n).map(str::to_ascii_lowercase);
    match t.as_deref() {
        Some("true" | "yes" | "on") => Some(true),
        Some("false" | "no" | "off") => Some(false),
        _ => {
            cx.err(&n.pos, field, "expected true or false");
            None
        }
    }
}

fn uint(cx: &mut Cx, n: &Node, field: &str, min: u32, max: u32) -> Option<u32> {
    match text(n).and_then(|t| t.trim().parse::<u32>().ok()) {
        Some(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            cx.err(
                &n.pos,
                field,
                format!("expected a whole number from {min} to {max}"),
            );
            None
        }
    }
}

fn duration(cx: &mut Cx, n: &Node, field: &str) -> Option<Duration> {
    match text(n).map(parse_duration) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            cx.err(&n.pos, field, e);
            None
        }
        None => {
            cx.err(&n.pos, field, "expected a duration such as 90s, 30m or 2h");
            None
        }
    }
}

/// A group name: 1 to 63 lowercase letters, digits and `-`, alphanumeric at both ends (it
/// becomes part of Lease names and of FleetLock requests).
fn group(cx: &mut Cx, n: &Node) -> Option<String> {
    let t = text(n).unwrap_or_default();
    let ok = !t.is_empty()
        && t.len() <= 63
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !t.starts_with('-')
        && !t.ends_with('-');
    if ok {
        Some(t.to_string())
    } else {
        cx.err(
            &n.pos,
            "rollout.group",
            format!(
                "{t:?}: expected 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            ),
        );
        None
    }
}

fn drain(cx: &mut Cx, n: &Node, cfg: &mut RolloutConfig) {
    let Some(entries) = n.as_map() else {
        cx.err(
            &n.pos,
            "rollout.drain",
            "expected a mapping such as {timeout: 10m}",
        );
        return;
    };
    for e in entries {
        if e.key == "timeout" {
            if let Some(d) = duration(cx, &e.value, "rollout.drain.timeout") {
                if d.is_zero() {
                    cx.err(
                        &e.value.pos,
                        "rollout.drain.timeout",
                        "expected a duration greater than zero",
                    );
                } else {
                    cfg.drain_timeout = d;
                }
            }
        } else {
            cx.err(
                &e.key_pos,
                &format!("rollout.drain.{}", e.key),
                "unknown key; expected timeout",
            );
        }
    }
}

fn waves(cx: &mut Cx, n: &Node) -> Vec<Wave> {
    let Kind::Seq(items) = &n.kind else {
        cx.err(
            &n.pos,
            "rollout.waves",
            "expected a list of {after, percent}",
        );
        return Vec::new();
    };
    let mut out: Vec<Wave> = Vec::new();
    let mut ok = true;
    for (i, it) in items.iter().enumerate() {
        let field = format!("rollout.waves[{i}]");
        let (Some(after), Some(percent)) = (it.get("after"), it.get("percent")) else {
            cx.err(
                &it.pos,
                &field,
                "expected a mapping with after (a duration) and percent",
            );
            ok = false;
            continue;
        };
        if let Some(e) = it
            .as_map()
            .into_iter()
            .flatten()
            .find(|e| e.key != "after" && e.key != "percent")
        {
            cx.err(
                &e.key_pos,
                &format!("{field}.{}", e.key),
                "unknown key; expected after or percent",
            );
        }
        let after = duration(cx, after, &format!("{field}.after"));
        let p = text(percent).and_then(|t| t.trim().trim_end_matches('%').parse::<f64>().ok());
        let p = match p {
            Some(p) if p > 0.0 && p <= 100.0 => Some(p),
            _ => {
                cx.err(
                    &percent.pos,
                    &format!("{field}.percent"),
                    "expected a number greater than 0 and at most 100",
                );
                None
            }
        };
        let (Some(after), Some(percent)) = (after, p) else {
            ok = false;
            continue;
        };
        if let Some(prev) = out.last() {
            if after < prev.after {
                cx.err(
                    &it.pos,
                    &format!("{field}.after"),
                    "waves must be listed in order of after",
                );
                ok = false;
            }
            if percent <= prev.percent {
                cx.err(&percent_pos(it), &format!("{field}.percent"), format!(
                    "percentages are cumulative and must grow from wave to wave (the previous wave has {})",
                    prev.percent
                ));
                ok = false;
            }
        }
        out.push(Wave { after, percent });
    }
    if let Some(last) = out.last() {
        if ok && last.percent < 100.0 {
            let it = items.last().unwrap_or(n);
            cx.err(&percent_pos(it), &format!("rollout.waves[{}].percent", items.len() - 1),
                "the last wave must reach 100 (percentages are cumulative), or some nodes would never start");
            ok = false;
        }
    }
    if ok {
        out
    } else {
        Vec::new()
    }
}

fn percent_pos(it: &Node) -> Pos {
    it.get("percent")
        .map_or_else(|| it.pos.clone(), |p| p.pos.clone())
}

fn windows(cx: &mut Cx, n: &Node) -> Vec<Window> {
    match &n.kind {
        Kind::Map(_) => window(cx, n, "rollout.window").into_iter().collect(),
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| window(cx, it, &format!("rollout.window[{i}]")))
            .collect(),
        _ => {
            cx.err(
                &n.pos,
                "rollout.window",
                "expected a mapping {days, start, length, timezone} or a list of them",
            );
            Vec::new()
        }
    }
}

fn window(cx: &mut Cx, n: &Node, field: &str) -> Option<Window> {
    let Some(entries) = n.as_map() else {
        cx.err(
            &n.pos,
            field,
            "expected a mapping {days, start, length, timezone}",
        );
        return None;
    };
    for e in entries {
        if !matches!(e.key.as_str(), "days" | "start" | "length" | "timezone") {
            cx.err(
                &e.key_pos,
                &format!("{field}.{}", e.key),
                "unknown key; expected days, start, length or timezone",
            );
        }
    }
    let days = window_days(cx, n, field);
    let start = match n.get("start") {
        None => {
            cx.err(
                &n.pos,
                &format!("{field}.start"),
                "missing; expected a time of day such as \"02:00\"",
            );
            None
        }
        Some(s) => match text(s).and_then(parse_time_of_day) {
            Some(m) => Some(m),
            None => {
                cx.err(
                    &s.pos,
                    &format!("{field}.start"),
                    "expected a time of day hh:mm (00:00 to 23:59)",
                );
                None
            }
        },
    };
    let length = match n.get("length") {
        None => {
            cx.err(
                &n.pos,
                &format!("{field}.length"),
                "missing; expected a duration such as 4h",
            );
            None
        }
        Some(l) => duration(cx, l, &format!("{field}.length")).and_then(|d| {
            if d.is_zero() || d > Duration::from_secs(7 * 86_400) {
                cx.err(
                    &l.pos,
                    &format!("{field}.length"),
                    "expected a duration greater than zero and at most 7 days",
                );
                None
            } else {
                Some(d)
            }
        }),
    };
    let timezone = match n.get("timezone") {
        None => Some(Timezone::Utc),
        Some(t) => match Timezone::parse(text(t).unwrap_or_default()) {
            Ok(tz) => Some(tz),
            Err(e) => {
                cx.err(&t.pos, &format!("{field}.timezone"), e);
                None
            }
        },
    };
    Some(Window {
        days: days?,
        start_minute: start?,
        length: length?,
        timezone: timezone?,
    })
}

fn window_days(cx: &mut Cx, n: &Node, field: &str) -> Option<Vec<Weekday>> {
    let field = format!("{field}.days");
    let Some(d) = n.get("days") else {
        cx.err(
            &n.pos,
            &field,
            "missing; expected a list of weekdays such as [sat, sun]",
        );
        return None;
    };
    let items: Vec<&Node> = match &d.kind {
        Kind::Seq(items) => items.iter().collect(),
        Kind::Scalar(_) => vec![d],
        _ => Vec::new(),
    };
    if items.is_empty() {
        cx.err(
            &d.pos,
            &field,
            "expected a non-empty list of weekdays such as [sat, sun]",
        );
        return None;
    }
    let mut days = Vec::new();
    for it in items {
        match text(it).and_then(Weekday::parse) {
            Some(w) => days.push(w),
            None => {
                cx.err(&it.pos, &field, format!(
                    "{:?} is not a weekday; expected mon, tue, wed, thu, fri, sat or sun (or the full English name)",
                    text(it).unwrap_or_default()
                ));
                return None;
            }
        }
    }
    Some(days)
}

/// `hh:mm` → minutes after midnight. Pure.
pub fn parse_time_of_day(t: &str) -> Option<u32> {
    let (h, m) = t.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn parse_text(text: &str) -> (RolloutConfig, Vec<String>) {
        let root = yaml::parse("config.yaml", text).unwrap();
        let mut diags = Vec::new();
        let cfg = parse(root.get("rollout").unwrap(), &mut diags);
        (cfg, diags.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn full_block_parses() {
        let (cfg, errs) = parse_text(
            "rollout:\n  group: edge\n  canary: true\n  waves: [{after: 0s, percent: 5}, {after: 30m, percent: 25}, {after: 2h, percent: 100}]\n  window: {days: [sat, Sunday], start: \"02:00\", length: 4h, timezone: \"+01:00\"}\n  max_unavailable: 2\n  drain_on_restart: yes\n  drain: {timeout: 15m}\n  halt_after_failures: 0\n  waves_for_all: true\n  lock_ttl: 10m\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(cfg.group, "edge");
        assert!(cfg.canary && cfg.drain_on_restart && cfg.waves_for_all);
        assert_eq!(cfg.waves.len(), 3);
        assert_eq!(
            cfg.waves[1],
            Wave {
                after: Duration::from_secs(1800),
                percent: 25.0
            }
        );
        assert_eq!(cfg.windows.len(), 1);
        assert_eq!(cfg.windows[0].days, vec![Weekday::Sat, Weekday::Sun]);
        assert_eq!(cfg.windows[0].start_minute, 120);
        assert_eq!(cfg.windows[0].timezone, Timezone::Fixed(3600));
        assert_eq!(cfg.max_unavailable, 2);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(900));
        assert_eq!(cfg.halt_after_failures, 0);
        assert_eq!(cfg.lock_ttl, Duration::from_secs(600));
    }

    #[test]
    fn empty_block_is_the_default() {
        let (cfg, errs) = parse_text("rollout: {}\n");
        assert!(errs.is_empty());
        assert_eq!(cfg, RolloutConfig::default());
        let (cfg, errs) = parse_text("rollout:\n");
        assert!(errs.is_empty());
        assert_eq!(cfg, RolloutConfig::default());
    }

    #[test]
    fn every_bad_value_is_an_error_naming_file_line_and_field() {
        let cases: &[(&str, &str)] = &[
            ("rollout: [1]\n", "config.yaml:1:10: rollout: expected a mapping"),
            ("rollout:\n  max_unavailable: 0\n", "config.yaml:2:20: rollout.max_unavailable: expected a whole number from 1 to 100"),
            ("rollout:\n  group: Edge_1\n", "config.yaml:2:10: rollout.group: \"Edge_1\": expected"),
            ("rollout:\n  canary: maybe\n", "config.yaml:2:11: rollout.canary: expected true or false"),
            ("rollout:\n  lock_ttl: 5s\n", "config.yaml:2:13: rollout.lock_ttl: expected at least 15s"),
            ("rollout:\n  lock_ttl: soon\n", "config.yaml:2:13: rollout.lock_ttl: \"soon\" is not a duration"),
            ("rollout:\n  drain: {timeout: 0s}\n", "rollout.drain.timeout: expected a duration greater than zero"),
            ("rollout:\n  drain: {timeuot: 1m}\n", "config.yaml:2:11: rollout.drain.timeuot: unknown key"),
            ("rollout:\n  wavs: []\n", "config.yaml:2:3: rollout.wavs: unknown key \"wavs\""),
            ("rollout:\n  waves: [{after: 1m, percent: 50}, {after: 2m, percent: 40}, {after: 3m, percent: 100}]\n", "rollout.waves[1].percent: percentages are cumulative"),
            ("rollout:\n  waves: [{after: 5m, percent: 50}, {after: 2m, percent: 100}]\n", "rollout.waves[1].after: waves must be listed in order"),
            ("rollout:\n  waves: [{after: 5m, percent: 50}]\n", "rollout.waves[0].percent: the last wave must reach 100"),
            ("rollout:\n  waves: [{after: 5m, percent: 0}]\n", "rollout.waves[0].percent: expected a number greater than 0"),
            ("rollout:\n  waves: [{after: 5m}]\n", "rollout.waves[0]: expected a mapping with after"),
            ("rollout:\n  window: {days: [sat], start: \"25:00\", length: 1h}\n", "rollout.window.start: expected a time of day"),
            ("rollout:\n  window: {days: [caturday], start: \"01:00\", length: 1h}\n", "rollout.window.days: \"caturday\" is not a weekday"),
            ("rollout:\n  window: {days: [sat], start: \"01:00\", length: 0s}\n", "rollout.window.length: expected a duration greater than zero"),
            ("rollout:\n  window: {days: [sat], start: \"01:00\"}\n", "rollout.window.length: missing"),
            ("rollout:\n  window: [{days: [sat], start: \"01:00\", length: 1h, timezone: Mars/Base}]\n", "rollout.window[0].timezone:"),
        ];
        for (text, want) in cases {
            let (cfg, errs) = parse_text(text);
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{text}: want {want:?}, got {errs:?}"
            );
            // A bad value never leaks into the config: every case keeps the defaults.
            assert_eq!(cfg, RolloutConfig::default(), "{text}");
        }
    }

    #[test]
    fn time_of_day() {
        assert_eq!(parse_time_of_day("02:00"), Some(120));
        assert_eq!(parse_time_of_day("23:59"), Some(1439));
        assert_eq!(parse_time_of_day("7:05"), Some(425));
        for bad in ["24:00", "12:60", "1200", "12:5", ":30", "a:bc"] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }
}
