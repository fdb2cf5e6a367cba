//! The real [`SystemRunner`] against real processes: exit codes, captured output, spawn
//! failures and the timeout that kills the whole process group.

use std::time::{Duration, Instant};

use bosun::runner::{CommandRunner, RunError, SystemRunner};

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

#[test]
fn system_runner_reports_exit_codes_and_captures_output() {
    let r = SystemRunner::new(Duration::from_secs(10));
    assert!(r.run(&argv(&["true"])).unwrap().success());
    let out = r.run(&argv(&["false"])).unwrap();
    assert_eq!(out.code, Some(1));
    assert!(!out.success());
    let out = r
        .run(&argv(&[
            "sh",
            "-c",
            "printf 'out'; printf 'err' >&2; exit 7",
        ]))
        .unwrap();
    assert_eq!(out.code, Some(7));
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");
    // Killed by a signal: no exit code.
    let out = r.run(&argv(&["sh", "-c", "kill -9 $$"])).unwrap();
    assert_eq!(out.code, None);
    assert_eq!(out.status_text(), "killed by a signal");
}

#[test]
fn system_runner_names_the_command_it_cannot_start() {
    let err = SystemRunner::default()
        .run(&argv(&["/nonexistent/bosun-tool", "--flag"]))
        .unwrap_err();
    assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot start `/nonexistent/bosun-tool --flag`"),
        "{err}"
    );
}

#[test]
fn system_runner_timeout_kills_the_process_group() {
    let r = SystemRunner::new(Duration::from_millis(300));
    let started = Instant::now();
    // The grandchild `sleep` holds the output pipes; only killing the whole group lets the
    // runner return before the sleep would end.
    let err = r
        .run(&argv(&["sh", "-c", "sleep 60; echo done"]))
        .unwrap_err();
    assert!(matches!(err, RunError::TimedOut { .. }), "{err:?}");
    assert!(
        err.to_string().contains("`sh -c 'sleep 60; echo done'`"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "runner waited for the grandchild"
    );
}
