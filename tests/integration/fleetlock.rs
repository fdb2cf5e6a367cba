//! bosun's FleetLock client against a fake server (a real HTTP server on 127.0.0.1) replaying
//! the answers of airlock, poseidon/fleetlock and heathcliff26/fleetlock: only 200 is a slot,
//! every other answer is "not yet", error bodies are parsed, the base URL's path is kept.

use bosun::fleetlock::{Answer, Client};

use crate::support::fleetlock::{Dialect, FleetLockServer};

fn client(server: &FleetLockServer, id: &str) -> Client {
    Client::new(&server.base(), id, "workers", None).unwrap()
}

fn refusal(a: Answer) -> bosun::fleetlock::Refusal {
    match a {
        Answer::NotYet(r) => r,
        Answer::Granted => panic!("expected a refusal, got Granted"),
    }
}

#[tokio::test]
async fn airlock_full_is_500_failed_lock_and_relock_and_unlock_of_unheld_are_200() {
    // Behind a reverse proxy: the base URL has a path, which must be kept.
    let s = FleetLockServer::start(Dialect::Airlock, 1, &["workers"], "/airlock", 0).await;
    let (a, b) = (client(&s, "node-a"), client(&s, "node-b"));
    assert_eq!(a.pre_reboot().await.unwrap(), Answer::Granted);
    // Re-lock by the holder: 200 (recursive lock).
    assert_eq!(a.pre_reboot().await.unwrap(), Answer::Granted);
    let r = refusal(b.pre_reboot().await.unwrap());
    assert_eq!((r.status, r.kind.as_deref()), (500, Some("failed_lock")));
    assert!(
        r.message.contains("all 1 semaphore slots currently locked"),
        "{r}"
    );
    // Unlock of a slot not held: 200, and a changes nothing.
    assert_eq!(b.steady_state().await.unwrap(), Answer::Granted);
    assert_eq!(s.holders("workers"), vec!["node-a".to_string()]);
    assert_eq!(a.steady_state().await.unwrap(), Answer::Granted);
    assert_eq!(b.pre_reboot().await.unwrap(), Answer::Granted);
    assert_eq!(s.holders("workers"), vec!["node-b".to_string()]);
    // Every request reached /v1/... under the prefix, with id and group.
    let log = s.log();
    assert!(
        log.iter()
            .all(|(p, _, g, _)| p.starts_with("/v1/") && g == "workers"),
        "{log:?}"
    );
    // An unknown group is a 400 with its kind: not yet, with the reason.
    let other = Client::new(&s.base(), "node-c", "nope", None).unwrap();
    let r = refusal(other.pre_reboot().await.unwrap());
    assert_eq!((r.status, r.kind.as_deref()), (400, Some("unknown_group")));
}

#[tokio::test]
async fn poseidon_answers_423_locked_when_held_by_another() {
    let s = FleetLockServer::start(Dialect::Poseidon, 1, &["workers"], "", 0).await;
    let (a, b) = (client(&s, "node-a"), client(&s, "node-b"));
    assert_eq!(a.pre_reboot().await.unwrap(), Answer::Granted);
    let r = refusal(b.pre_reboot().await.unwrap());
    assert_eq!((r.status, r.kind.as_deref()), (423, Some("locked")));
    assert_eq!(a.steady_state().await.unwrap(), Answer::Granted);
    assert_eq!(b.pre_reboot().await.unwrap(), Answer::Granted);
}

#[tokio::test]
async fn heathcliff_202_while_draining_is_not_yet_and_423_when_full() {
    let s = FleetLockServer::start(Dialect::Heathcliff, 2, &["workers"], "", 2).await;
    let (a, b, c) = (
        client(&s, "node-a"),
        client(&s, "node-b"),
        client(&s, "node-c"),
    );
    // 202 while the server drains node-a: not yet, even though the slot is reserved.
    let r = refusal(a.pre_reboot().await.unwrap());
    assert_eq!((r.status, r.kind.as_deref()), (202, Some("waiting")));
    assert_eq!(refusal(a.pre_reboot().await.unwrap()).status, 202);
    assert_eq!(a.pre_reboot().await.unwrap(), Answer::Granted);
    assert_eq!(refusal(b.pre_reboot().await.unwrap()).status, 202);
    let r = refusal(c.pre_reboot().await.unwrap());
    assert_eq!((r.status, r.kind.as_deref()), (423, Some("all_slots_full")));
    assert_eq!(a.steady_state().await.unwrap(), Answer::Granted);
    assert_eq!(refusal(c.pre_reboot().await.unwrap()).status, 202);
}

#[tokio::test]
async fn the_request_carries_the_protocol_header_and_body() {
    // The fake answers 400 without the header or with a body lacking id/group (as airlock
    // does), so Granted proves both were sent.
    let s = FleetLockServer::start(Dialect::Airlock, 1, &["workers"], "", 0).await;
    assert_eq!(
        client(&s, "n1").pre_reboot().await.unwrap(),
        Answer::Granted
    );
    assert_eq!(
        s.log(),
        vec![(
            "/v1/pre-reboot".to_string(),
            "n1".to_string(),
            "workers".to_string(),
            200
        )]
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_refusal() {
    // Bind and drop a listener: nothing listens on that loopback port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::new(&format!("http://127.0.0.1:{port}"), "n1", "workers", None).unwrap();
    let e = c.pre_reboot().await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("127.0.0.1:{port}/v1/pre-reboot")),
        "{e}"
    );
}
