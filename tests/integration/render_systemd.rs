//! The k3s unit drop-in bosun renders is accepted by the real systemd parser
//! (`systemd-analyze verify`, offline, with the unit search path pointed at a temp dir).
//! Args with spaces, `%`, `$`, quotes and backslashes must parse without warnings.

use std::collections::BTreeMap;
use std::process::Command;

use bosun::config::{K3os, NodeConfig, Secret};
use bosun::render::{render, RenderEnv, RenderSettings};

fn env() -> RenderEnv {
    RenderEnv {
        passwd: Some("root:x:0:0:root:/root:/bin/sh\n".into()),
        group: Some("root:x:0:\n".into()),
        shadow: Some("root:*:::::::\n".into()),
        password_salt: "abcdefgh".into(),
        node_hostname: "n1".into(),
        settings: RenderSettings {
            // verify checks that the executable exists.
            k3s_bin: "/bin/true".into(),
            ..RenderSettings::default()
        },
        ..Default::default()
    }
}

fn verify(cfg: &NodeConfig, unit: &str) {
    let rendered = render(cfg, &env()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dropin_path = format!("/etc/systemd/system/{unit}.service.d/90-bosun.conf");
    let dropin = &rendered.state.files[&dropin_path];
    let dropin_dir = dir.path().join(format!("{unit}.service.d"));
    std::fs::create_dir_all(&dropin_dir).unwrap();
    std::fs::write(dropin_dir.join("90-bosun.conf"), &dropin.content).unwrap();
    // A unit like the one the k3s install script writes.
    std::fs::write(
        dir.path().join(format!("{unit}.service")),
        "[Unit]\nDescription=Lightweight Kubernetes\n[Service]\nType=simple\n\
         EnvironmentFile=-/etc/default/%N\nExecStart=/bin/false server\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    // The env file the drop-in references, if any (verify does not require it to exist, but
    // keep the layout real).
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join(format!("{unit}.service")))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("90-bosun.conf"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd complained about the drop-in: {ours:?}\n{}",
        String::from_utf8_lossy(&dropin.content)
    );
}

#[test]
fn server_dropin_with_awkward_args_parses_cleanly() {
    let cfg = NodeConfig {
        k3os: K3os {
            k3s_args: vec![
                "server".into(),
                "--node-name".into(),
                "edge 1".into(),
                "--kube-apiserver-arg=event-ttl=1h".into(),
                "--tls-san=host.example.com".into(),
                "--node-label=cost=100%".into(),
                "--data-dir=$HOME/k3s".into(),
                "--kubelet-arg=eviction-hard=memory.available<100Mi".into(),
                "--flannel-iface=\"eth0\"".into(),
                "--snapshotter=C:\\path".into(),
                "it's".into(),
            ],
            labels: BTreeMap::from([("topology.kubernetes.io/zone".into(), "a b".into())]),
            taints: vec!["dedicated=edge:NoSchedule".into()],
            environment: BTreeMap::from([("http_proxy".into(), "http://proxy:3128".into())]),
            ..Default::default()
        },
        ..Default::default()
    };
    verify(&cfg, "k3s");
}

#[test]
fn agent_dropin_parses_cleanly() {
    let cfg = NodeConfig {
        k3os: K3os {
            server_url: Some("https://10.0.0.1:6443".into()),
            token: Some(Secret("K10abc::node:def".into())),
            ..Default::default()
        },
        ..Default::default()
    };
    verify(&cfg, "k3s-agent");
}
