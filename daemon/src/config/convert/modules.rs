//! `k3os.modules`: each entry is `name [param=value …]`, as k3os read it (`pkg/module`: split on
//! spaces, the first word the module, the rest its parameters for `finit_module`). The name goes
//! to modules-load.d and the parameters to an `options` line in modprobe.d and to `modprobe`'s
//! argv, so both are checked here: a name of letters, digits, `_` and `-`; parameters
//! `param=value` without blanks, quotes, shell metacharacters or control characters. A module
//! listed twice must have the same parameters both times (one `options` line per module).

use super::tree::list;
use super::Cx;
use crate::config::model::KernelModule;
use crate::config::yaml::{Node, Pos};

/// Characters a parameter value may hold besides letters and digits: enough for numbers,
/// lists (`1,2`), paths, MAC addresses and `key:value` forms, nothing a shell or modprobe.d
/// would read specially.
const VALUE_PUNCTUATION: &[u8] = b"_-.,:/+=@%";

/// Whether `name` is a kernel module name: letters, digits, `_` and `-`.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks one module parameter, `param=value`; the error says what was expected.
pub fn check_module_param(p: &str) -> Result<(), String> {
    let expected = "expected param=value of letters, digits and _-.,:/+=@%";
    let Some((name, value)) = p.split_once('=') else {
        return Err(format!("parameter {p:?} has no '='; {expected}"));
    };
    if !valid_module_name(name) {
        return Err(format!("parameter name {name:?} is invalid; {expected}"));
    }
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || VALUE_PUNCTUATION.contains(&(*c as u8))));
    match bad {
        _ if value.is_empty() => Err(format!("parameter {p:?} has an empty value; {expected}")),
        Some(c) => Err(format!(
            "parameter {p:?} contains {c:?} (quotes, blanks, shell metacharacters and control characters are refused); {expected}"
        )),
        None => Ok(()),
    }
}

/// Parses one entry: `name [param=value …]`, words separated by spaces or tabs.
pub fn parse_module(entry: &str) -> Result<KernelModule, String> {
    if let Some(c) = entry.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "{entry:?} contains the control character {c:?}; expected one line: name [param=value …]"
        ));
    }
    let mut words = entry.split([' ', '\t']).filter(|w| !w.is_empty());
    let name = words.next().unwrap_or_default();
    if !valid_module_name(name) {
        return Err(format!(
            "{name:?} is not a kernel module name; expected letters, digits, '_' and '-', then optional param=value parameters"
        ));
    }
    let params: Vec<String> = words.map(str::to_string).collect();
    for p in &params {
        check_module_param(p).map_err(|e| format!("module {name}: {e}"))?;
    }
    Ok(KernelModule {
        name: name.to_string(),
        params,
    })
}

/// The valid entries of `k3os.modules` (`n`), each module once; every bad entry, and a module
/// repeated with other parameters, is reported.
pub(super) fn modules(cx: &mut Cx, n: Option<&Node>) -> Vec<KernelModule> {
    let mut out: Vec<(KernelModule, Pos)> = Vec::new();
    for (entry, pos) in list(n) {
        let m = match parse_module(&entry) {
            Ok(m) => m,
            Err(e) => {
                cx.err(&pos, "k3os.modules", e);
                continue;
            }
        };
        match out.iter().find(|(o, _)| o.name == m.name) {
            Some((o, _)) if o.params == m.params => {}
            Some((o, first)) => {
                let msg = format!(
                    "module {} is listed again with other parameters ({:?}, at {first}: {:?}); one module takes one set of parameters",
                    m.name,
                    m.params.join(" "),
                    o.params.join(" ")
                );
                cx.err(&pos, "k3os.modules", msg);
            }
            None => out.push((m, pos)),
        }
    }
    out.into_iter().map(|(m, _)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_into_name_and_parameters() {
        assert_eq!(parse_module("kvm"), Ok(KernelModule::named("kvm")));
        assert_eq!(
            parse_module("bonding mode=4  miimon=100\tlacp_rate=1"),
            Ok(KernelModule {
                name: "bonding".into(),
                params: vec!["mode=4".into(), "miimon=100".into(), "lacp_rate=1".into()],
            })
        );
        assert_eq!(
            parse_module("snd-hda-intel model=dell-m4-1,auto index=0")
                .unwrap()
                .to_string(),
            "snd-hda-intel model=dell-m4-1,auto index=0"
        );
    }

    #[test]
    fn bad_names_and_parameters_are_refused_with_the_reason() {
        let e = |s: &str| parse_module(s).unwrap_err();
        assert!(e("").contains("not a kernel module name"));
        assert!(e("bond/ing").contains("not a kernel module name"));
        assert!(
            e("bonding mode").contains("no '='"),
            "{}",
            e("bonding mode")
        );
        assert!(e("bonding =4").contains("parameter name"));
        assert!(e("bonding mode=").contains("empty value"));
        for bad in [
            "x=$(reboot)",
            "x=a;b",
            "x='a'",
            "x=\"a\"",
            "x=a|b",
            "x=`a`",
            "x=a\\b",
            "x=a&b",
            "x=a>b",
        ] {
            let msg = e(&format!("m {bad}"));
            assert!(msg.contains("are refused"), "{bad}: {msg}");
        }
        assert!(e("m x=1\ny=2").contains("control character"));
    }
}
