//! Network keys: `k3os.dns_nameservers` and `k3os.ntp_servers` become systemd-resolved and
//! systemd-timesyncd drop-ins; `k3os.wifi` becomes NetworkManager keyfiles.
//!
//! Invariants:
//! - k3os documented both lists as **fallback** servers ("if DNS is not configured by DHCP", "if
//!   NTP is not configured elsewhere") and wrote them to connman's `FallbackNameservers=` /
//!   `FallbackTimeservers=`. The systemd equivalents with the same meaning are resolved's
//!   `FallbackDNS=` and timesyncd's `FallbackNTP=`, so that is what bosun writes: a node whose
//!   DHCP hands out DNS keeps using it, exactly as on k3os.
//! - Each wifi network is its own keyfile `bosun-<name>.nmconnection`, 0600 and secret (it holds
//!   the passphrase). The file name keeps `[A-Za-z0-9._-]`; other characters become `_` and an
//!   8-hex-digit hash of the SSID is appended so different SSIDs never share a file. The
//!   connection UUID is derived from the SSID, so renders are stable.
//! - NetworkManager does not pick up new keyfiles on `reload` (that only rereads
//!   NetworkManager.conf/DNS); bosun restarts it when a keyfile changes. A NetworkManager restart
//!   keeps active connections up (it re-assumes them).

use sha2::{Digest, Sha256};

use super::{root_file, Builder, RenderError};
use crate::config::{NodeConfig, Wifi};
use crate::desired::{Effect, EffectRule, Trigger};

/// systemd-resolved drop-in carrying `FallbackDNS=` from `k3os.dns_nameservers`.
pub const RESOLVED_DROPIN: &str = "/etc/systemd/resolved.conf.d/90-bosun.conf";
/// systemd-timesyncd drop-in carrying `FallbackNTP=` from `k3os.ntp_servers`.
pub const TIMESYNCD_DROPIN: &str = "/etc/systemd/timesyncd.conf.d/90-bosun.conf";
/// Where the `k3os.wifi` keyfiles go (`bosun-<ssid>.nmconnection`, 0600).
pub const NM_CONNECTIONS_DIR: &str = "/etc/NetworkManager/system-connections";

const HEADER: &str = "# Managed by bosun from the node config; local edits are overwritten.\n";

fn check_servers(key: &str, list: &[String]) -> Result<(), RenderError> {
    for s in list {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RenderError::InvalidValue {
                key: key.into(),
                reason: format!("'{s}' is not a server address (no spaces, not empty)"),
            });
        }
    }
    Ok(())
}

pub(crate) fn render_dns_ntp(cfg: &NodeConfig, b: &mut Builder) -> Result<(), RenderError> {
    let k = &cfg.k3os;
    if !k.dns_nameservers.is_empty() {
        check_servers("k3os.dns_nameservers", &k.dns_nameservers)?;
        let text = format!(
            "{HEADER}[Resolve]\nFallbackDNS={}\n",
            k.dns_nameservers.join(" ")
        );
        b.put(root_file(
            RESOLVED_DROPIN,
            text.into_bytes(),
            0o644,
            "k3os.dns_nameservers",
        ));
        b.effects.push(EffectRule {
            effect: Effect::RestartUnit {
                unit: "systemd-resolved.service".into(),
            },
            trigger: Trigger::Changed(vec![RESOLVED_DROPIN.into()]),
        });
    }
    if !k.ntp_servers.is_empty() {
        check_servers("k3os.ntp_servers", &k.ntp_servers)?;
        let text = format!("{HEADER}[Time]\nFallbackNTP={}\n", k.ntp_servers.join(" "));
        b.put(root_file(
            TIMESYNCD_DROPIN,
            text.into_bytes(),
            0o644,
            "k3os.ntp_servers",
        ));
        b.effects.push(EffectRule {
            effect: Effect::RestartUnit {
                unit: "systemd-timesyncd.service".into(),
            },
            trigger: Trigger::Changed(vec![TIMESYNCD_DROPIN.into()]),
        });
    }
    Ok(())
}

/// The keyfile path for a wifi network.
pub fn wifi_keyfile_path(ssid: &str) -> String {
    let safe: String = ssid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == ssid && !ssid.starts_with('.') {
        format!("{NM_CONNECTIONS_DIR}/bosun-{ssid}.nmconnection")
    } else {
        let h = hex::encode(&Sha256::digest(ssid.as_bytes())[..4]);
        format!("{NM_CONNECTIONS_DIR}/bosun-{safe}-{h}.nmconnection")
    }
}

/// A stable UUID (RFC 9562 version 8, name-based on SHA-256) for a wifi connection.
fn wifi_uuid(ssid: &str) -> String {
    let mut d: [u8; 16] = Sha256::digest(format!("bosun-wifi:{ssid}").as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    d[6] = (d[6] & 0x0f) | 0x80;
    d[8] = (d[8] & 0x3f) | 0x80;
    let h = hex::encode(d);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Escapes a GKeyFile value (keyfiles are GKeyFile): backslash, leading space, line breaks, tabs.
fn keyfile_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            ' ' if i == 0 => s.push_str("\\s"),
            c => s.push(c),
        }
    }
    s
}

fn keyfile(w: &Wifi) -> Result<String, RenderError> {
    let ssid = &w.name;
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(RenderError::InvalidValue {
            key: "k3os.wifi".into(),
            reason: format!("SSID '{ssid}' must be 1 to 32 bytes"),
        });
    }
    let psk = w.passphrase.expose();
    let psk_ok = psk.is_empty()
        || ((8..=63).contains(&psk.len()) && psk.bytes().all(|c| (0x20..0x7f).contains(&c)))
        || (psk.len() == 64 && psk.bytes().all(|c| c.is_ascii_hexdigit()));
    if !psk_ok {
        // Never echo the passphrase.
        return Err(RenderError::InvalidValue {
            key: "k3os.wifi".into(),
            reason: format!(
                "passphrase of '{ssid}' must be 8-63 printable ASCII characters or 64 hex digits \
                 (or empty for an open network)"
            ),
        });
    }
    let mut t = format!(
        "{HEADER}[connection]\nid=bosun-{}\nuuid={}\ntype=wifi\nautoconnect=true\n\n\
         [wifi]\nmode=infrastructure\nssid={}\n\n",
        keyfile_escape(ssid),
        wifi_uuid(ssid),
        keyfile_escape(ssid)
    );
    if !psk.is_empty() {
        t.push_str(&format!(
            "[wifi-security]\nkey-mgmt=wpa-psk\npsk={}\n\n",
            keyfile_escape(psk)
        ));
    }
    t.push_str("[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n");
    Ok(t)
}

pub(crate) fn render_wifi(cfg: &NodeConfig, b: &mut Builder) -> Result<(), RenderError> {
    if cfg.k3os.wifi.is_empty() {
        return Ok(());
    }
    let mut paths = Vec::new();
    for w in &cfg.k3os.wifi {
        let path = wifi_keyfile_path(&w.name);
        let f = root_file(&path, keyfile(w)?.into_bytes(), 0o600, "k3os.wifi");
        b.put(f);
        paths.push(path);
    }
    b.effects.push(EffectRule {
        effect: Effect::RestartUnit {
            unit: "NetworkManager.service".into(),
        },
        trigger: Trigger::Changed(paths),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::test_support::*;
    use super::*;
    use crate::config::Secret;

    #[test]
    fn dns_and_ntp_dropins_restart_their_units() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.dns_nameservers = vec!["8.8.8.8".into(), "1.1.1.1".into()];
        cfg.k3os.ntp_servers = vec!["0.pool.ntp.org".into()];
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(
            text(&r, RESOLVED_DROPIN),
            format!("{HEADER}[Resolve]\nFallbackDNS=8.8.8.8 1.1.1.1\n")
        );
        assert_eq!(
            text(&r, TIMESYNCD_DROPIN),
            format!("{HEADER}[Time]\nFallbackNTP=0.pool.ntp.org\n")
        );
        for (unit, path) in [
            ("systemd-resolved.service", RESOLVED_DROPIN),
            ("systemd-timesyncd.service", TIMESYNCD_DROPIN),
        ] {
            assert!(r.state.effects.contains(&EffectRule {
                effect: Effect::RestartUnit { unit: unit.into() },
                trigger: Trigger::Changed(vec![path.into()]),
            }));
        }
        cfg.k3os.ntp_servers = vec!["a b".into()];
        assert!(render(&cfg, &env()).is_err());
    }

    #[test]
    fn no_dns_no_ntp_renders_nothing() {
        let r = render(&NodeConfig::default(), &env()).unwrap();
        assert!(!r.state.files.contains_key(RESOLVED_DROPIN));
        assert!(!r.state.files.contains_key(TIMESYNCD_DROPIN));
    }

    #[test]
    fn wifi_keyfiles_are_secret_0600_and_restart_networkmanager() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.wifi = vec![
            Wifi {
                name: "home".into(),
                passphrase: Secret("mypassword".into()),
            },
            Wifi {
                name: "Café net/2".into(),
                passphrase: Secret(String::new()),
            },
        ];
        let r = render(&cfg, &env()).unwrap();
        let home = file(
            &r,
            "/etc/NetworkManager/system-connections/bosun-home.nmconnection",
        );
        assert_eq!(
            (home.mode, home.uid, home.gid, home.secret),
            (0o600, 0, 0, true)
        );
        let t = String::from_utf8(home.content.clone()).unwrap();
        assert!(t.contains("[connection]\nid=bosun-home\nuuid="));
        assert!(t.contains("type=wifi\n"));
        assert!(t.contains("[wifi]\nmode=infrastructure\nssid=home\n"));
        assert!(t.contains("[wifi-security]\nkey-mgmt=wpa-psk\npsk=mypassword\n"));

        let other_path = wifi_keyfile_path("Café net/2");
        assert!(other_path.starts_with("/etc/NetworkManager/system-connections/bosun-Caf__net_2-"));
        let other = text(&r, &other_path);
        assert!(!other.contains("wifi-security"), "open network");
        assert!(other.contains("ssid=Café net/2\n"));
        assert_ne!(wifi_uuid("home"), wifi_uuid("Café net/2"));
        assert_eq!(wifi_uuid("home").len(), 36);

        let restart = r
            .state
            .effects
            .iter()
            .find(|e| {
                e.effect
                    == Effect::RestartUnit {
                        unit: "NetworkManager.service".into(),
                    }
            })
            .unwrap();
        assert_eq!(
            restart.trigger,
            Trigger::Changed(vec![
                "/etc/NetworkManager/system-connections/bosun-home.nmconnection".into(),
                other_path
            ])
        );
    }

    #[test]
    fn bad_passphrase_is_rejected_without_echoing_it() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.wifi = vec![Wifi {
            name: "home".into(),
            passphrase: Secret("short".into()),
        }];
        let err = render(&cfg, &env()).unwrap_err().to_string();
        assert!(err.contains("passphrase of 'home'"), "{err}");
        assert!(!err.contains("short"), "{err}");
    }

    #[test]
    fn keyfile_escaping() {
        assert_eq!(keyfile_escape(" a\\b\nc"), "\\sa\\\\b\\nc");
    }
}
