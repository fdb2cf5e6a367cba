//! Weekly maintenance windows (zincati's periodic strategy): a window opens on each listed
//! weekday at `start` (local time of its time zone) and stays open for `length`, possibly
//! across midnight and the end of the week. Windows gate starting a disruption, never
//! interrupt one. Pure: time is a parameter (unix seconds).
//!
//! Time zones: `UTC` (default) and fixed UTC offsets (`+01:00`, `-05:30`, `UTC+2`). IANA
//! names (`Europe/Berlin`) are refused with a clear error: following daylight saving time needs
//! a time zone database, which bosun does not ship; use the offset the window should have.

use std::time::Duration;

/// Seconds in a week.
const WEEK: i64 = 7 * 86_400;

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    const NAMES: [&'static str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];

    /// `mon`…`sun` or the full English name, any case (zincati's spelling). Pure.
    pub fn parse(s: &str) -> Option<Weekday> {
        let s = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == s || (s.len() == 3 && n.starts_with(&s)))
            .map(|i| Self::ALL[i])
    }

    /// Days after Monday (Monday = 0).
    pub fn index(self) -> i64 {
        self as i64
    }
}

/// The time zone a window's days and start are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timezone {
    /// UTC.
    Utc,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
}

impl Timezone {
    /// `UTC`, `Z`, `GMT`, `+01:00`, `-0530`, `+2`, `UTC+02:00`. Pure.
    pub fn parse(s: &str) -> Result<Timezone, String> {
        let t = s.trim();
        let upper = t.to_ascii_uppercase();
        if matches!(upper.as_str(), "UTC" | "Z" | "GMT" | "ETC/UTC") {
            return Ok(Timezone::Utc);
        }
        let offset = upper
            .strip_prefix("UTC")
            .or_else(|| upper.strip_prefix("GMT"))
            .unwrap_or(&upper);
        if let Some(secs) = parse_offset(offset) {
            return Ok(if secs == 0 {
                Timezone::Utc
            } else {
                Timezone::Fixed(secs)
            });
        }
        if t.contains('/') {
            return Err(format!(
                "{t:?}: IANA time zone names are not supported (bosun ships no time zone database); \
                 use UTC or a fixed offset such as +01:00"
            ));
        }
        Err(format!(
            "{t:?} is not a time zone; expected UTC or a fixed offset such as +01:00 or -05:30"
        ))
    }

    /// Seconds east of UTC.
    pub fn offset(self) -> i64 {
        match self {
            Timezone::Utc => 0,
            Timezone::Fixed(s) => i64::from(s),
        }
    }
}

/// `+HH:MM`, `+HHMM`, `+H` → seconds (at most ±14 h).
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty()
        || h.len() > 2
        || m.len() > 2
        || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && h * 60 + m <= 14 * 60).then_some(sign * (h * 3600 + m * 60))
}

/// One weekly window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The weekdays it opens on (local time).
    pub days: Vec<Weekday>,
    /// Minutes after local midnight it opens at.
    pub start_minute: u32,
    /// How long it stays open (at most a week).
    pub length: Duration,
    /// The zone `days` and `start_minute` are in.
    pub timezone: Timezone,
}

impl Window {
    /// Seconds since Monday 00:00 local time of the instant `now` (unix seconds).
    fn week_position(&self, now: i64) -> i64 {
        let local = now + self.timezone.offset();
        // 1970-01-01 was a Thursday (Monday + 3).
        (local.div_euclid(86_400) + 3).rem_euclid(7) * 86_400 + local.rem_euclid(86_400)
    }

    /// The week positions at which this window opens.
    fn openings(&self) -> impl Iterator<Item = i64> + '_ {
        self.days
            .iter()
            .map(|d| d.index() * 86_400 + i64::from(self.start_minute) * 60)
    }

    /// Whether `now` is inside this window. Pure.
    pub fn contains(&self, now: i64) -> bool {
        let pos = self.week_position(now);
        let len = self.length.as_secs() as i64;
        self.openings().any(|o| (pos - o).rem_euclid(WEEK) < len)
    }

    /// The next instant at or after `now` at which this window opens. Pure.
    pub fn next_opening(&self, now: i64) -> i64 {
        let pos = self.week_position(now);
        let wait = self
            .openings()
            .map(|o| (o - pos).rem_euclid(WEEK))
            .min()
            .unwrap_or(WEEK);
        now + wait
    }
}

/// Whether a disruption may start at `now`: no windows, or inside one of them. Pure.
pub fn open(windows: &[Window], now: i64) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// When the next window opens after `now` (`None` without windows). Pure.
pub fn next_opening(windows: &[Window], now: i64) -> Option<i64> {
    windows.iter().map(|w| w.next_opening(now)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-06-01 was a Saturday; 00:00 UTC.
    const SAT: i64 = 1_717_200_000;
    const H: i64 = 3600;

    fn w(days: &[Weekday], start: u32, length_h: u64, tz: Timezone) -> Window {
        Window {
            days: days.to_vec(),
            start_minute: start,
            length: Duration::from_secs(length_h * 3600),
            timezone: tz,
        }
    }

    #[test]
    fn weekdays_parse_like_zincati() {
        assert_eq!(Weekday::parse("Sat"), Some(Weekday::Sat));
        assert_eq!(Weekday::parse("sunday"), Some(Weekday::Sun));
        assert_eq!(Weekday::parse("MON"), Some(Weekday::Mon));
        assert_eq!(Weekday::parse("sa"), None);
        assert_eq!(Weekday::parse("satur"), None);
    }

    #[test]
    fn timezones() {
        assert_eq!(Timezone::parse("UTC"), Ok(Timezone::Utc));
        assert_eq!(Timezone::parse("utc"), Ok(Timezone::Utc));
        assert_eq!(Timezone::parse("+00:00"), Ok(Timezone::Utc));
        assert_eq!(Timezone::parse("+01:00"), Ok(Timezone::Fixed(3600)));
        assert_eq!(Timezone::parse("-0530"), Ok(Timezone::Fixed(-19_800)));
        assert_eq!(Timezone::parse("UTC+2"), Ok(Timezone::Fixed(7200)));
        assert_eq!(Timezone::parse("GMT-03:30"), Ok(Timezone::Fixed(-12_600)));
        assert!(Timezone::parse("Europe/Berlin")
            .unwrap_err()
            .contains("IANA"));
        for bad in ["+15:00", "+1:60", "CET", "", "+", "+123"] {
            assert!(Timezone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_membership_and_next_opening_in_utc() {
        let win = w(&[Weekday::Sat, Weekday::Sun], 120, 4, Timezone::Utc);
        assert!(!win.contains(SAT + H));
        assert_eq!(win.next_opening(SAT + H), SAT + 2 * H);
        assert!(win.contains(SAT + 2 * H));
        assert!(win.contains(SAT + 6 * H - 1));
        assert!(!win.contains(SAT + 6 * H));
        // Saturday's window closed: Sunday's is next.
        assert_eq!(win.next_opening(SAT + 6 * H), SAT + 26 * H);
        // After Sunday's: next Saturday.
        assert_eq!(win.next_opening(SAT + 31 * H), SAT + 7 * 24 * H + 2 * H);
        assert_eq!(win.next_opening(SAT + 2 * H), SAT + 2 * H);
    }

    #[test]
    fn windows_cross_midnight_and_the_end_of_the_week() {
        // Sunday 23:30 for one hour: open Monday 00:15 (the next week's first day).
        let win = w(&[Weekday::Sun], 23 * 60 + 30, 1, Timezone::Utc);
        let sunday = SAT + 24 * H;
        assert!(win.contains(sunday + 23 * H + 45 * 60));
        assert!(win.contains(sunday + 24 * H + 15 * 60));
        assert!(!win.contains(sunday + 24 * H + 30 * 60));
    }

    #[test]
    fn fixed_offsets_shift_the_window() {
        // 02:00 at +02:00 is 00:00 UTC.
        let win = w(&[Weekday::Sat], 120, 1, Timezone::Fixed(7200));
        assert!(win.contains(SAT));
        assert!(!win.contains(SAT + H));
        // 02:00 at -05:00 is 07:00 UTC.
        let win = w(&[Weekday::Sat], 120, 1, Timezone::Fixed(-5 * 3600));
        assert!(win.contains(SAT + 7 * H));
        assert!(!win.contains(SAT + 2 * H));
        // 23:00 Friday at -03:00 is 02:00 UTC on Saturday.
        let win = w(&[Weekday::Fri], 23 * 60, 1, Timezone::Fixed(-3 * 3600));
        assert!(win.contains(SAT + 2 * H));
    }

    #[test]
    fn no_windows_is_always_open() {
        assert!(open(&[], SAT));
        assert_eq!(next_opening(&[], SAT), None);
        let wins = [
            w(&[Weekday::Wed], 60, 1, Timezone::Utc),
            w(&[Weekday::Sat], 600, 1, Timezone::Utc),
        ];
        assert!(!open(&wins, SAT));
        assert_eq!(next_opening(&wins, SAT), Some(SAT + 10 * H));
        assert!(open(&wins, SAT + 10 * H));
    }
}
