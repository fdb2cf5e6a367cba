//! The Git source against real remotes: `git daemon` on 127.0.0.1 and `file://` repos, with
//! commits signed by the real `git` + `ssh-keygen` / `gpg`.

use std::path::Path;
use std::sync::Once;

use bosun::source::{
    self, check_descends, check_descends_or_deepen, verify_commit, Ancestry, Cache, FetchOutcome,
    Oid, Refusal, SignersSource, SourceConfig, SourceError, TooLarge, TransferCounters, Verdict,
    VerifyConfig, VerifyMode, MAX_OBJECT_BYTES,
};

use crate::support::git::{
    pack_files, GitDaemon, GitHttpServer, GpgHome, SshKey, SshServer, WorkRepo,
};

#[allow(unsafe_code)] // `init_git_globals` sets libgit2's process globals: see the SAFETY comment.
fn init() {
    static ONCE: Once = Once::new();
    // SAFETY: every test that uses libgit2 passes through this `Once` first, so the globals
    // are set before any of them touches libgit2 (the harness's other threads do not).
    ONCE.call_once(|| unsafe { source::init_git_globals() });
}

fn oid(hex: &str) -> Oid {
    Oid::from_str(hex).unwrap()
}

/// A small fleet repo: base, one group, one node, and a file that is not a layer.
fn fleet(repo: &WorkRepo, prefix: &str) {
    repo.write(&format!("{prefix}config.yaml"), "hostname: base\n")
        .write(&format!("{prefix}groups/edge.yaml"), "match: ['edge-*']\n")
        .write(&format!("{prefix}nodes/edge-1.yaml"), "hostname: edge-1\n")
        .write(&format!("{prefix}nodes/notes.txt"), "not a layer\n")
        .write(&format!("{prefix}README.md"), "# fleet\n");
}

fn refused(err: &SourceError) -> &Refusal {
    err.refusal()
        .unwrap_or_else(|| panic!("expected a refusal, got: {err}"))
}

#[test]
fn git_daemon_fetch_then_idle_poll_downloads_nothing_then_update() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("first");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let cfg = SourceConfig::new(daemon.url("fleet"), "main", tmp.path().join("cache"));
    let counters = TransferCounters::new();

    let first = source::fetch_counted(&cfg, &counters).unwrap();
    assert_eq!(first, FetchOutcome::Updated { commit: oid(&c1) });
    let after_first = counters.totals();
    assert!(after_first.received_objects > 0, "{after_first:?}");
    assert!(after_first.received_bytes > 0, "{after_first:?}");

    let cache = Cache::open(&cfg.cache_dir).unwrap();
    let snap = source::snapshot(&cache, oid(&c1), None, "edge-1").unwrap();
    assert_eq!(snap.commit.as_deref(), Some(c1.as_str()));
    let paths: Vec<&str> = snap.files().keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["config.yaml", "groups/edge.yaml", "nodes/edge-1.yaml"]
    );
    assert_eq!(
        snap.get("nodes/edge-1.yaml"),
        Some(&b"hostname: edge-1\n"[..])
    );
    drop(cache);

    // Idle poll: the advertisement matches the cache, so no pack is negotiated or received.
    let packs_before = pack_files(&cfg.cache_dir);
    let idle = source::fetch_counted(&cfg, &counters).unwrap();
    assert_eq!(idle, FetchOutcome::Unchanged { commit: oid(&c1) });
    let after_idle = counters.totals();
    assert_eq!(after_idle.polls, after_first.polls + 1);
    assert_eq!(after_idle.pack_fetches, after_first.pack_fetches);
    assert_eq!(after_idle.received_bytes, after_first.received_bytes);
    assert_eq!(after_idle.received_objects, after_first.received_objects);
    assert_eq!(pack_files(&cfg.cache_dir), packs_before);

    // A new commit on the remote is fetched and its content read.
    repo.write("nodes/edge-1.yaml", "hostname: edge-1-renamed\n")
        .write("nodes/edge-2.yml", "hostname: edge-2\n");
    let c2 = repo.commit("second");
    let second = source::fetch_counted(&cfg, &counters).unwrap();
    assert_eq!(second, FetchOutcome::Updated { commit: oid(&c2) });
    assert!(counters.totals().received_bytes > after_idle.received_bytes);
    let cache = Cache::open(&cfg.cache_dir).unwrap();
    let snap = source::snapshot(&cache, oid(&c2), None, "edge-1").unwrap();
    assert_eq!(
        snap.get("nodes/edge-1.yaml"),
        Some(&b"hostname: edge-1-renamed\n"[..])
    );
    assert_eq!(snap.get("nodes/edge-2.yml"), None, "another node's file");
    let snap2 = source::snapshot(&cache, oid(&c2), None, "edge-2").unwrap();
    assert_eq!(
        snap2.get("nodes/edge-2.yml"),
        Some(&b"hostname: edge-2\n"[..])
    );
    assert_eq!(snap2.get("nodes/edge-1.yaml"), None, "another node's file");
    // The older commit's snapshot is still readable and unchanged.
    let old = source::snapshot(&cache, oid(&c1), None, "edge-1").unwrap();
    assert_eq!(
        old.get("nodes/edge-1.yaml"),
        Some(&b"hostname: edge-1\n"[..])
    );
}

#[test]
fn file_remote_with_subdir_reads_only_that_directory() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", "hostname: wrong-level\n");
    fleet(&repo, "clusters/eu/");
    let c1 = repo.commit("layout with subdir");
    let mut cfg = SourceConfig::new(repo.file_url(), "main", tmp.path().join("cache"));
    cfg.subdir = Some("clusters/eu".to_string());
    // depth is ignored for file:// (libgit2's local transport cannot fetch shallow).
    cfg.depth = Some(1);

    let out = source::fetch(&cfg).unwrap();
    assert_eq!(out, FetchOutcome::Updated { commit: oid(&c1) });
    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c1) }
    );
    let cache = Cache::open(&cfg.cache_dir).unwrap();
    let snap = source::snapshot(&cache, out.commit(), cfg.subdir.as_deref(), "edge-1").unwrap();
    assert_eq!(snap.get("config.yaml"), Some(&b"hostname: base\n"[..]));
    assert_eq!(snap.files().len(), 3);

    let err = source::snapshot(&cache, out.commit(), Some("clusters/us"), "edge-1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("clusters/us") && err.contains(&c1), "{err}");
    let err = source::snapshot(&cache, out.commit(), Some("../etc"), "edge-1")
        .unwrap_err()
        .to_string();
    assert!(err.contains(".."), "{err}");
    // The repo root has no groups/nodes but has config.yaml; a subdir without config.yaml fails.
    let err = source::snapshot(&cache, out.commit(), Some("clusters"), "edge-1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("clusters/config.yaml"), "{err}");
}

#[test]
fn oversized_and_symlinked_layer_files_are_refused() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    fleet(&repo, "");
    let big = "a".repeat(bosun::snapshot::MAX_CONFIG_FILE as usize + 1);
    repo.write("nodes/huge.yaml", &big);
    let c_big = repo.commit("too big");
    repo.remove("nodes/huge.yaml");
    std::os::unix::fs::symlink("/etc/shadow", repo.dir.join("nodes/link.yaml")).unwrap();
    let c_link = repo.commit("symlink");
    let cfg = SourceConfig::new(repo.file_url(), "main", tmp.path().join("cache"));
    source::fetch(&cfg).unwrap();
    let cache = Cache::open(&cfg.cache_dir).unwrap();

    // Another node's oversized file is never read.
    let fine = source::snapshot(&cache, oid(&c_big), None, "edge-1").unwrap();
    assert!(fine.get("nodes/edge-1.yaml").is_some());
    let err = source::snapshot(&cache, oid(&c_big), None, "huge")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nodes/huge.yaml") && err.contains("limit"),
        "{err}"
    );
    let err = source::snapshot(&cache, oid(&c_link), None, "link")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nodes/link.yaml") && err.contains("symlink"),
        "{err}"
    );
}

#[test]
fn tags_commit_ids_and_missing_refs() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c0 = repo.commit("before the tag");
    repo.write("config.yaml", "hostname: tagged\n");
    let c1 = repo.commit("tagged");
    crate::support::git::git(&repo.dir, &["tag", "-a", "-m", "release", "v1"]);
    repo.write("config.yaml", "hostname: later\n");
    let c2 = repo.commit("after the tag");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));

    // An annotated tag resolves to the commit it points at.
    let tag_cfg = SourceConfig::new(daemon.url("fleet"), "v1", tmp.path().join("cache-tag"));
    assert_eq!(
        source::fetch(&tag_cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    assert_eq!(
        source::fetch(&tag_cfg).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c1) }
    );

    // A pinned commit that a tag peels to is fetched through that tag.
    let tagged_pin = SourceConfig::new(daemon.url("fleet"), &c1, tmp.path().join("cache-tp"));
    assert_eq!(
        source::fetch(&tagged_pin).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    // A pinned commit that is no ref tip at all is found in the history.
    let pin_cfg = SourceConfig::new(daemon.url("fleet"), &c0, tmp.path().join("cache-pin"));
    assert_eq!(
        source::fetch(&pin_cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c0) }
    );
    let cache = Cache::open(&pin_cfg.cache_dir).unwrap();
    let snap = source::snapshot(&cache, oid(&c0), None, "edge-1").unwrap();
    assert_eq!(snap.get("config.yaml"), Some(&b"hostname: base\n"[..]));
    drop(cache);

    let missing = SourceConfig::new(daemon.url("fleet"), "nope", tmp.path().join("cache-x"));
    let err = source::fetch(&missing).unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains("refs/heads/main"), "{err}");

    // Once cached, a pinned commit needs no network at all: stop the daemon and poll again.
    drop(daemon);
    assert_eq!(
        source::fetch(&pin_cfg).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c0) }
    );
    // A branch does need the remote; the error names the URL.
    let branch_cfg = SourceConfig::new(tag_cfg.url.clone(), "main", tmp.path().join("cache-b"));
    let err = source::fetch(&branch_cfg).unwrap_err().to_string();
    assert!(err.contains(&tag_cfg.url), "{err}");
    let _ = c2;
}

#[test]
fn shallow_fetch_over_git_daemon_and_ancestry_deepening() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("one");
    repo.write("config.yaml", "hostname: two\n");
    let c2 = repo.commit("two");
    repo.write("config.yaml", "hostname: three\n");
    let c3 = repo.commit("three");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let mut cfg = SourceConfig::new(daemon.url("fleet"), "main", tmp.path().join("cache"));
    cfg.depth = Some(1);

    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c3) }
    );
    {
        let cache = Cache::open(&cfg.cache_dir).unwrap();
        assert!(cache.is_shallow());
        assert!(cache.has_commit(oid(&c3)));
        assert!(
            !cache.has_commit(oid(&c2)),
            "depth 1 must not fetch the parent"
        );
        let snap = source::snapshot(&cache, oid(&c3), None, "edge-1").unwrap();
        assert_eq!(snap.get("config.yaml"), Some(&b"hostname: three\n"[..]));
        // c1 was "applied" earlier on another cache: ancestry is unknowable here, and the
        // local check says so instead of guessing either way.
        let err = check_descends(&cache, oid(&c3), Some(oid(&c1)), false).unwrap_err();
        assert!(matches!(err, SourceError::ShallowAncestry { .. }), "{err}");
    }
    // The deepening check unshallows and then proves c3 descends from c1.
    assert_eq!(
        check_descends_or_deepen(
            &cfg,
            oid(&c3),
            Some(oid(&c1)),
            false,
            &TransferCounters::new()
        )
        .unwrap(),
        Ancestry::Descendant
    );
    let cache = Cache::open(&cfg.cache_dir).unwrap();
    assert!(!cache.is_shallow());
    assert!(cache.has_commit(oid(&c1)));
    drop(cache);

    // A rollback seen through a fresh shallow cache is refused after deepening.
    let mut cfg2 = cfg.clone();
    cfg2.cache_dir = tmp.path().join("cache2");
    repo.reset_hard(&c2);
    assert_eq!(
        source::fetch(&cfg2).unwrap(),
        FetchOutcome::Updated { commit: oid(&c2) }
    );
    let err = check_descends_or_deepen(
        &cfg2,
        oid(&c2),
        Some(oid(&c3)),
        false,
        &TransferCounters::new(),
    )
    .unwrap_err();
    assert_eq!(
        refused(&err),
        &Refusal::NotDescendant {
            last_applied: oid(&c3)
        }
    );
}

#[test]
fn force_push_of_older_history_is_refused_unless_rewrites_are_allowed() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("one");
    repo.write("config.yaml", "hostname: two\n");
    let c2 = repo.commit("two");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let cfg = SourceConfig::new(daemon.url("fleet"), "main", tmp.path().join("cache"));

    let applied = source::fetch(&cfg).unwrap().commit();
    assert_eq!(applied, oid(&c2));
    {
        let cache = Cache::open(&cfg.cache_dir).unwrap();
        assert_eq!(
            check_descends(&cache, applied, None, false).unwrap(),
            Ancestry::FirstApply
        );
        assert_eq!(
            check_descends(&cache, applied, Some(applied), false).unwrap(),
            Ancestry::Same
        );
        assert_eq!(
            check_descends(&cache, applied, Some(oid(&c1)), false).unwrap(),
            Ancestry::Descendant
        );
    }

    // Force-push back to c1: fetched, but refused as a rollback.
    repo.reset_hard(&c1);
    let rolled = source::fetch(&cfg).unwrap();
    assert_eq!(rolled, FetchOutcome::Updated { commit: oid(&c1) });
    let cache = Cache::open(&cfg.cache_dir).unwrap();
    let err = check_descends(&cache, oid(&c1), Some(applied), false).unwrap_err();
    assert_eq!(
        refused(&err),
        &Refusal::NotDescendant {
            last_applied: applied
        }
    );
    assert!(err.to_string().contains(&c2), "{err}");
    drop(cache);

    // Force-push of a rewritten branch (diverged from c1).
    repo.write("config.yaml", "hostname: rewritten\n");
    let c3 = repo.commit("rewritten two");
    assert_eq!(source::fetch(&cfg).unwrap().commit(), oid(&c3));
    let cache = Cache::open(&cfg.cache_dir).unwrap();
    let err = check_descends(&cache, oid(&c3), Some(applied), false).unwrap_err();
    assert!(matches!(refused(&err), Refusal::NotDescendant { .. }));
    assert_eq!(
        check_descends(&cache, oid(&c3), Some(applied), true).unwrap(),
        Ancestry::Rewritten
    );
}

fn signed_fixture(tmp: &Path) -> (WorkRepo, SshKey, SshKey) {
    let keys = tmp.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let trusted = SshKey::generate(&keys, "trusted");
    let stranger = SshKey::generate(&keys, "stranger");
    let repo = WorkRepo::init(&tmp.join("fleet"));
    fleet(&repo, "");
    (repo, trusted, stranger)
}

fn fetch_head(repo: &WorkRepo, cache_dir: &Path) -> (Cache, Oid) {
    let cfg = SourceConfig::new(repo.file_url(), "main", cache_dir.to_path_buf());
    let commit = source::fetch(&cfg).unwrap().commit();
    (Cache::open(cache_dir).unwrap(), commit)
}

fn ssh_verify_config(signers: &str) -> VerifyConfig {
    VerifyConfig {
        mode: VerifyMode::Head,
        allowed_signers: Some(SignersSource::Contents(signers.to_string())),
        openpgp_keys: Vec::new(),
        allow_history_rewrite: false,
    }
}

#[test]
fn ssh_signed_commit_is_verified_and_attributed() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let (repo, trusted, _stranger) = signed_fixture(tmp.path());
    let c1 = repo.commit_ssh_signed(&trusted.private, "signed");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&c1));

    let signers = format!(
        "# fleet\n{}\n",
        trusted.allowed_signers_line("ops@example.invalid")
    );
    assert_eq!(
        verify_commit(&cache, head, &ssh_verify_config(&signers)).unwrap(),
        Verdict::Verified {
            signer: "ops@example.invalid".to_string()
        }
    );
    // Same file read from disk, with a namespaces restriction that includes git.
    let path = tmp.path().join("allowed_signers");
    std::fs::write(
        &path,
        format!(
            "{}\n",
            trusted.allowed_signers_line("ops@example.invalid namespaces=\"file,git\"")
        ),
    )
    .unwrap();
    let cfg = VerifyConfig {
        allowed_signers: Some(SignersSource::Path(path.clone())),
        ..ssh_verify_config("")
    };
    assert!(matches!(
        verify_commit(&cache, head, &cfg).unwrap(),
        Verdict::Verified { .. }
    ));
    // Mode off checks nothing.
    let off = VerifyConfig::default();
    assert_eq!(
        verify_commit(&cache, head, &off).unwrap(),
        Verdict::NotChecked
    );
    // A missing signers file is an error naming it, never "no keys".
    let missing = VerifyConfig {
        allowed_signers: Some(SignersSource::Path(tmp.path().join("nope"))),
        ..ssh_verify_config("")
    };
    let err = verify_commit(&cache, head, &missing).unwrap_err();
    assert!(err.refusal().is_none());
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn ssh_refusals_unsigned_unknown_key_namespace_and_tampering() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let (repo, trusted, stranger) = signed_fixture(tmp.path());
    let signers = format!("{}\n", trusted.allowed_signers_line("ops@example.invalid"));
    let vcfg = ssh_verify_config(&signers);

    // Unsigned.
    repo.commit("unsigned");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    let err = verify_commit(&cache, head, &vcfg).unwrap_err();
    assert_eq!(refused(&err), &Refusal::Unsigned);
    drop(cache);

    // Signed by a key that is not in allowed_signers.
    repo.write("config.yaml", "hostname: stranger\n");
    repo.commit_ssh_signed(&stranger.private, "by a stranger");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    let err = verify_commit(&cache, head, &vcfg).unwrap_err();
    assert!(matches!(refused(&err), Refusal::UnknownKey { .. }), "{err}");
    // The trusted key restricted to another namespace does not authorize commits either.
    let restricted = ssh_verify_config(&trusted.allowed_signers_line("ops namespaces=\"file\""));
    repo.write("config.yaml", "hostname: trusted\n");
    let good = repo.commit_ssh_signed(&trusted.private, "trusted");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&good));
    let err = verify_commit(&cache, head, &restricted).unwrap_err();
    assert!(matches!(refused(&err), Refusal::UnknownKey { .. }), "{err}");
    assert!(verify_commit(&cache, head, &vcfg).is_ok());
    drop(cache);

    // The trusted signature kept on an edited message no longer matches.
    let forged = repo.tamper_message(&good, "trusted (edited after signing)");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&forged));
    let err = verify_commit(&cache, head, &vcfg).unwrap_err();
    assert!(
        matches!(refused(&err), Refusal::BadSignature { .. }),
        "{err}"
    );
    drop(cache);

    // A valid SSH signature by the trusted key, but made for another namespace.
    repo.write("config.yaml", "hostname: namespace\n");
    let plain = repo.commit("to be signed for the file namespace");
    let sig = trusted.sign("file", repo.payload(&plain).as_bytes());
    let wrong_ns = repo.attach_signature(&plain, &sig);
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&wrong_ns));
    let err = verify_commit(&cache, head, &vcfg).unwrap_err();
    assert_eq!(
        refused(&err),
        &Refusal::WrongNamespace {
            namespace: "file".to_string()
        }
    );
    drop(cache);

    // Control for the fixture above: the same construction in the git namespace verifies, so
    // the refusal really was about the namespace.
    repo.write("config.yaml", "hostname: namespace-git\n");
    let plain = repo.commit("to be signed for the git namespace");
    let sig = trusted.sign("git", repo.payload(&plain).as_bytes());
    repo.attach_signature(&plain, &sig);
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert!(matches!(
        verify_commit(&cache, head, &vcfg).unwrap(),
        Verdict::Verified { .. }
    ));
}

#[test]
fn openpgp_signed_commits_verify_against_armored_keys() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let gpg = GpgHome::new(&tmp.path().join("g"));
    let fpr = gpg.generate("Bosun Test <test@example.invalid>");
    let other_fpr = gpg.generate("Other <other@example.invalid>");
    assert_ne!(fpr, other_fpr);
    let trusted_key = gpg.export(&fpr);
    let other_key = gpg.export(&other_fpr);
    assert!(trusted_key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));

    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    fleet(&repo, "");
    let c1 = repo.commit_gpg_signed(&gpg, &fpr, "pgp signed");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&c1));

    let vcfg = |keys: Vec<String>| VerifyConfig {
        mode: VerifyMode::Head,
        allowed_signers: None,
        openpgp_keys: keys,
        allow_history_rewrite: false,
    };
    assert_eq!(
        verify_commit(
            &cache,
            head,
            &vcfg(vec![other_key.clone(), trusted_key.clone()])
        )
        .unwrap(),
        Verdict::Verified {
            signer: fpr.clone()
        }
    );
    let err = verify_commit(&cache, head, &vcfg(vec![other_key.clone()])).unwrap_err();
    assert!(matches!(refused(&err), Refusal::UnknownKey { .. }), "{err}");
    // An SSH-only trust config does not accept an OpenPGP signature.
    let ssh_only = ssh_verify_config(
        "ops ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti\n",
    );
    let err = verify_commit(&cache, head, &ssh_only).unwrap_err();
    assert!(matches!(refused(&err), Refusal::UnknownKey { .. }), "{err}");
    drop(cache);

    // Tampered message under the old signature.
    let forged = repo.tamper_message(&c1, "pgp signed, then edited");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&forged));
    let err = verify_commit(&cache, head, &vcfg(vec![trusted_key.clone()])).unwrap_err();
    assert!(
        matches!(refused(&err), Refusal::BadSignature { .. }),
        "{err}"
    );

    // Signed by a signing subkey (git's `KEYID!` forces that exact subkey): verified, and
    // attributed to the primary key. The key is exported again so it includes the subkey.
    let sub_fpr = gpg.add_signing_subkey(&fpr);
    assert_ne!(sub_fpr, fpr);
    let with_subkey = gpg.export(&fpr);
    repo.write("config.yaml", "hostname: subkey\n");
    let c_sub = repo.commit_gpg_signed(&gpg, &format!("{sub_fpr}!"), "signed by subkey");
    let (cache, head) = fetch_head(&repo, &tmp.path().join("cache"));
    assert_eq!(head, oid(&c_sub));
    assert_eq!(
        verify_commit(&cache, head, &vcfg(vec![with_subkey])).unwrap(),
        Verdict::Verified {
            signer: fpr.clone()
        }
    );
    // The export made before the subkey existed does not know it.
    let err = verify_commit(&cache, head, &vcfg(vec![trusted_key.clone()])).unwrap_err();
    assert!(matches!(refused(&err), Refusal::UnknownKey { .. }), "{err}");

    // A broken key block is a config error naming its position.
    let err = verify_commit(&cache, head, &vcfg(vec![trusted_key, "junk".into()])).unwrap_err();
    assert!(err.to_string().contains("#1"), "{err}");
}

#[test]
fn poll_applies_chain_of_custody_in_order_and_refuses_replayed_old_signed_commits() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let trusted = SshKey::generate(&keys, "trusted");
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "fleet/");
    let c1 = repo.commit_ssh_signed(&trusted.private, "signed one");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let mut cfg = SourceConfig::new(daemon.url("fleet"), "main", tmp.path().join("cache"));
    cfg.subdir = Some("fleet".into());
    cfg.depth = Some(1);
    let vcfg = ssh_verify_config(&trusted.allowed_signers_line("ops@example.invalid"));
    let counters = TransferCounters::new();
    let mut memo = source::VerifyMemo::default();

    let first = source::poll(&cfg, &vcfg, None, &counters, "edge-1", None, &mut memo).unwrap();
    assert_eq!(first.fetch, FetchOutcome::Updated { commit: oid(&c1) });
    assert_eq!(
        first.verdict,
        Verdict::Verified {
            signer: "ops@example.invalid".into()
        }
    );
    assert_eq!(first.ancestry, Ancestry::FirstApply);
    assert_eq!(
        first
            .files
            .as_ref()
            .unwrap()
            .snapshot
            .get("nodes/edge-1.yaml"),
        Some(&b"hostname: edge-1\n"[..])
    );

    let before = counters.totals();
    // The caller has c1's files: an idle poll reads no tree.
    let idle = source::poll(
        &cfg,
        &vcfg,
        Some(oid(&c1)),
        &counters,
        "edge-1",
        Some(oid(&c1)),
        &mut memo,
    )
    .unwrap();
    assert_eq!(idle.fetch, FetchOutcome::Unchanged { commit: oid(&c1) });
    assert_eq!(idle.ancestry, Ancestry::Same);
    assert_eq!(idle.files, None);
    assert_eq!(counters.totals().received_bytes, before.received_bytes);

    // An unsigned commit on top is refused; the caller keeps c1.
    repo.write("fleet/config.yaml", "hostname: unsigned\n");
    let c2 = repo.commit("unsigned two");
    let err = source::poll(
        &cfg,
        &vcfg,
        Some(oid(&c1)),
        &counters,
        "edge-1",
        Some(oid(&c1)),
        &mut memo,
    )
    .unwrap_err();
    assert_eq!(refused(&err), &Refusal::Unsigned);
    assert!(err.to_string().contains(&c2), "{err}");

    // A signed commit on top is accepted as a descendant. Only the first fetch was shallow;
    // later ones are incremental, so the history from c1 stays connected without deepening.
    repo.write("fleet/config.yaml", "hostname: three\n");
    let c3 = repo.commit_ssh_signed(&trusted.private, "signed three");
    let third = source::poll(
        &cfg,
        &vcfg,
        Some(oid(&c1)),
        &counters,
        "edge-1",
        Some(oid(&c1)),
        &mut memo,
    )
    .unwrap();
    assert_eq!(third.commit(), oid(&c3));
    assert_eq!(third.ancestry, Ancestry::Descendant);
    {
        let cache = Cache::open(&cfg.cache_dir).unwrap();
        assert!(cache.is_shallow(), "the first fetch was depth 1");
        assert!(cache.has_commit(oid(&c2)), "incremental fetch brings c2");
    }
    assert_eq!(
        third.files.as_ref().unwrap().snapshot.get("config.yaml"),
        Some(&b"hostname: three\n"[..])
    );

    // Replaying the old, validly signed c1 by force-push is a rollback: refused.
    repo.reset_hard(&c1);
    let err = source::poll(
        &cfg,
        &vcfg,
        Some(oid(&c3)),
        &counters,
        "edge-1",
        None,
        &mut memo,
    )
    .unwrap_err();
    assert_eq!(
        refused(&err),
        &Refusal::NotDescendant {
            last_applied: oid(&c3)
        }
    );
}

#[test]
fn stale_ref_lock_from_a_crash_blocks_fetch_until_cleared() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    fleet(&repo, "");
    repo.commit("one");
    let cfg = SourceConfig::new(repo.file_url(), "main", tmp.path().join("cache"));
    source::fetch(&cfg).unwrap();

    // What a power cut in the middle of a ref update leaves behind.
    let lock = cfg.cache_dir.join("refs/bosun/remote/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    repo.write("config.yaml", "hostname: two\n");
    let c2 = repo.commit("two");
    let err = source::fetch(&cfg).unwrap_err().to_string();
    assert!(err.contains("lock"), "{err}");

    assert_eq!(
        Cache::clear_stale_locks(&cfg.cache_dir).unwrap(),
        vec![lock]
    );
    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c2) }
    );
    assert!(Cache::clear_stale_locks(&cfg.cache_dir).unwrap().is_empty());
}

#[test]
fn ssh_remote_with_client_key_and_pinned_host_key() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("over ssh");
    let server = SshServer::start(&tmp.path().join("sshd"));
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).unwrap();
    let mut cfg = SourceConfig::new(server.url(&repo.dir), "main", tmp.path().join("cache"));
    cfg.ssh_key_file = Some(server.client_key.clone());
    cfg.ssh_known_hosts = Some(known_hosts.clone());
    cfg.depth = Some(1);

    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    assert!(Cache::open(&cfg.cache_dir).unwrap().is_shallow());
    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c1) }
    );

    // Another host key pinned for this host: refused before any credential is sent.
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let impostor = SshKey::generate(&keys, "impostor");
    let wrong_pin = tmp.path().join("known_hosts_wrong");
    let impostor_key: Vec<&str> = impostor.public.split_whitespace().take(2).collect();
    std::fs::write(
        &wrong_pin,
        format!("[127.0.0.1]:{} {}\n", server.port, impostor_key.join(" ")),
    )
    .unwrap();
    let mut bad = cfg.clone();
    bad.cache_dir = tmp.path().join("cache-bad");
    bad.ssh_known_hosts = Some(wrong_pin.clone());
    let err = source::fetch(&bad).unwrap_err().to_string();
    assert!(
        err.contains("does not match") && err.contains("known_hosts_wrong"),
        "{err}"
    );

    // The host is not listed at all.
    std::fs::write(
        &wrong_pin,
        format!("example.invalid {}\n", server.host_key_public),
    )
    .unwrap();
    let err = source::fetch(&bad).unwrap_err().to_string();
    assert!(err.contains("not listed"), "{err}");

    // A client key the server does not accept: a clean authentication error, no retry loop.
    bad.ssh_known_hosts = Some(known_hosts);
    bad.ssh_key_file = Some(impostor.private.clone());
    let err = source::fetch(&bad).unwrap_err().to_string();
    assert!(
        err.contains(&server.url(&repo.dir)) && err.contains("authentication"),
        "{err}"
    );
    // No key at all.
    bad.ssh_key_file = None;
    let err = source::fetch(&bad).unwrap_err().to_string();
    assert!(err.contains("ssh_key_file"), "{err}");
}

/// HTTPS through bosun's rustls transport against a real `git http-backend` behind TLS on
/// 127.0.0.1, with the server's private CA given as `ca_file`.
#[test]
fn https_remote_with_private_ca_and_token() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("over https");
    let ca = crate::support::tls::TestCa::new("bosun test git CA");
    let config = crate::support::tls::server_config(&ca.server_cert(), None);
    let server = GitHttpServer::start_tls(&tmp.path().join("srv"), "deploy-bot", "tok", config);
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let mut cfg = SourceConfig::new(server.url("fleet"), "main", tmp.path().join("cache"));
    assert!(cfg.url.starts_with("https://127.0.0.1:"), "{}", cfg.url);
    cfg.token_file = Some(token);
    cfg.token_username = Some("deploy-bot".into());
    cfg.ca_file = Some(ca_file.clone());
    cfg.depth = Some(1);

    let counters = TransferCounters::new();
    assert_eq!(
        source::fetch_counted(&cfg, &counters).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    assert!(Cache::open(&cfg.cache_dir).unwrap().is_shallow());
    assert_eq!(
        source::fetch_counted(&cfg, &counters).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c1) }
    );
    assert_eq!(counters.totals().pack_fetches, 1);
    repo.write("config.yaml", "hostname: two\n");
    let c2 = repo.commit("two");
    assert_eq!(
        source::fetch_counted(&cfg, &counters).unwrap(),
        FetchOutcome::Updated { commit: oid(&c2) }
    );
    assert_eq!(server.rejected.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A moved repository (301 on the advertisement): the pack request goes to the new URL.
    let mut moved = cfg.clone();
    moved.url = server.url("moved-fleet");
    moved.cache_dir = tmp.path().join("cache-moved");
    assert_eq!(
        source::fetch(&moved).unwrap(),
        FetchOutcome::Updated { commit: oid(&c2) }
    );
    assert_eq!(
        server.moved_posts.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // Without the CA the server is not trusted: nothing is fetched.
    let mut untrusted = cfg.clone();
    untrusted.ca_file = None;
    untrusted.cache_dir = tmp.path().join("cache-untrusted");
    let err = source::fetch(&untrusted).unwrap_err().to_string();
    assert!(
        err.contains(&cfg.url) && err.contains("certificate"),
        "{err}"
    );
    // Another CA does not vouch for it either.
    let other = tmp.path().join("other-ca.pem");
    std::fs::write(&other, crate::support::tls::TestCa::new("other").pem).unwrap();
    untrusted.ca_file = Some(other);
    let err = source::fetch(&untrusted).unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    // A ca_file without certificates is an error naming it.
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    untrusted.ca_file = Some(empty);
    let err = source::fetch(&untrusted).unwrap_err().to_string();
    assert!(err.contains("empty.pem"), "{err}");
    // A wrong token: one rejected request, a clear authentication error.
    let wrong = tmp.path().join("wrong-token");
    std::fs::write(&wrong, "nope").unwrap();
    let mut bad = cfg.clone();
    bad.token_file = Some(wrong);
    bad.cache_dir = tmp.path().join("cache-bad");
    let err = source::fetch(&bad).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert_eq!(server.rejected.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn http_remote_with_token_file_and_custom_username() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("over http");
    let server = GitHttpServer::start(&tmp.path().join("srv"), "deploy-bot", "s3cret-token");
    let token = tmp.path().join("token");
    // Trailing newline as `echo` writes it: trimmed.
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let mut cfg = SourceConfig::new(server.url("fleet"), "main", tmp.path().join("cache"));
    cfg.token_file = Some(token.clone());
    cfg.token_username = Some("deploy-bot".into());

    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    let counters = TransferCounters::new();
    assert_eq!(
        source::fetch_counted(&cfg, &counters).unwrap(),
        FetchOutcome::Unchanged { commit: oid(&c1) }
    );
    assert_eq!(counters.totals().pack_fetches, 0);

    // The default username is x-access-token, which this server does not accept.
    let mut default_user = cfg.clone();
    default_user.token_username = None;
    default_user.cache_dir = tmp.path().join("cache-2");
    let before = server.rejected.load(std::sync::atomic::Ordering::SeqCst);
    let err = source::fetch(&default_user).unwrap_err().to_string();
    assert!(err.contains(&server.url("fleet")), "{err}");
    let attempts = server.rejected.load(std::sync::atomic::Ordering::SeqCst) - before;
    // The token goes with the first request; a 401 is final (no retry loop).
    assert_eq!(attempts, 1, "{attempts} rejected requests");
    assert!(err.contains("authentication failed"), "{err}");

    // A rotated token is read at the next fetch.
    std::fs::write(&token, "rotated-wrong").unwrap();
    assert!(source::fetch(&cfg).is_err());
    std::fs::write(&token, "s3cret-token").unwrap();
    repo.write("config.yaml", "hostname: two\n");
    let c2 = repo.commit("two");
    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c2) }
    );

    // An unreadable token file is an error naming it.
    cfg.token_file = Some(tmp.path().join("missing-token"));
    let err = source::fetch(&cfg).unwrap_err().to_string();
    assert!(err.contains("missing-token"), "{err}");
    // A token over plain http to a non-loopback host is refused before connecting.
    cfg.url = "http://git.example.invalid/fleet".into();
    cfg.token_file = Some(token);
    let err = source::fetch(&cfg).unwrap_err().to_string();
    assert!(err.contains("in clear"), "{err}");
}

/// RUSTSEC-2026-0183: git2 before 0.21 built a slice from libgit2's null pointer when a remote
/// advertised no refs (undefined behaviour; a debug build aborts on the precondition check),
/// and bosun lists the advertisement on every poll. An empty remote is a clear error.
#[test]
fn a_remote_without_refs_is_an_error_not_a_crash() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    crate::support::git::git(&srv, &["init", "-q", "--bare", "empty.git"]);
    let daemon = GitDaemon::start(&srv);
    let file_url = format!("file://{}", srv.join("empty.git").display());
    for (i, url) in [daemon.url("empty.git"), file_url].into_iter().enumerate() {
        let cfg = SourceConfig::new(url.clone(), "main", tmp.path().join(format!("cache{i}")));
        let e = source::fetch(&cfg).unwrap_err();
        assert!(
            matches!(e, SourceError::RefNotFound { .. }) && e.to_string().contains("no refs"),
            "{url}: {e}"
        );
    }
}

/// A ref name that is not UTF-8 (git allows any bytes but a few) in the advertisement: git2's
/// `RemoteHead::name` panics on it (an abort in the release build, then a crash loop as every
/// poll lists the refs). bosun skips such refs; the configured branch is still fetched.
#[test]
fn a_remote_advertising_a_ref_name_that_is_not_utf8_is_still_fetched() {
    use std::os::unix::ffi::OsStrExt;
    init();
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    fleet(&repo, "");
    let c1 = repo.commit("first");
    let bad = std::ffi::OsStr::from_bytes(b"refs/heads/bad\xff");
    let status = crate::support::git::git_cmd(&repo.dir)
        .arg("update-ref")
        .arg(bad)
        .arg(&c1)
        .status()
        .unwrap();
    assert!(status.success());
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    for (i, url) in [daemon.url("fleet"), repo.file_url()]
        .into_iter()
        .enumerate()
    {
        let cfg = SourceConfig::new(url.clone(), "main", tmp.path().join(format!("cache{i}")));
        let got = source::fetch(&cfg).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(got, FetchOutcome::Updated { commit: oid(&c1) }, "{url}");
    }
}

/// Writes `len` random (incompressible) bytes to `path`.
fn random_file(path: &Path, len: usize) {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Issue 12, item 3: `max_fetch_bytes` is enforced while receiving, on every transport: a
/// commit with a 3 MiB incompressible blob is refused (`fetch_too_large`) under a 1 MiB limit
/// after little more than 1 MiB (network transports) or before anything is copied (`file://`,
/// counted on the objects), leaves no pack behind, is refused again at the next poll without a
/// download, and is fetched once the limit allows it.
#[test]
fn an_oversized_fetch_is_refused_while_receiving_on_every_transport() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    let repo = WorkRepo::init(&srv.join("fleet"));
    fleet(&repo, "");
    random_file(&repo.dir.join("big.bin"), 3 << 20);
    let c1 = repo.commit("a big blob");
    let daemon = GitDaemon::start(&srv);
    let http = GitHttpServer::start(&srv, "deploy-bot", "tok");
    let token = tmp.path().join("token");
    std::fs::write(&token, "tok").unwrap();
    let ssh = SshServer::start(&tmp.path().join("sshd"));
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", ssh.known_hosts_line())).unwrap();

    let cache = |name: &str| tmp.path().join(format!("cache-{name}"));
    let mut via_http = SourceConfig::new(http.url("fleet"), "main", cache("http"));
    via_http.token_file = Some(token);
    via_http.token_username = Some("deploy-bot".into());
    let mut via_ssh = SourceConfig::new(ssh.url(&repo.dir), "main", cache("ssh"));
    via_ssh.ssh_key_file = Some(ssh.client_key.clone());
    via_ssh.ssh_known_hosts = Some(known_hosts);
    let remotes = [
        (
            "git",
            SourceConfig::new(daemon.url("fleet"), "main", cache("git")),
        ),
        (
            "file",
            SourceConfig::new(repo.file_url(), "main", cache("file")),
        ),
        ("http", via_http),
        ("ssh", via_ssh),
    ];
    let limit = 1u64 << 20;
    for (name, mut cfg) in remotes {
        cfg.max_fetch_bytes = limit;
        let counters = TransferCounters::new();
        let err = source::fetch_counted(&cfg, &counters).unwrap_err();
        let reason = refused(&err);
        assert_eq!(reason.label(), "fetch_too_large", "{name}: {err}");
        let Refusal::FetchTooLarge(TooLarge::Bytes { limit: l, seen }) = reason else {
            panic!("{name}: {err}");
        };
        assert_eq!(*l, limit, "{name}");
        assert!(*seen > limit, "{name}: {err}");
        if name != "file" {
            // Stopped while receiving: not after the whole 3 MiB.
            assert!(*seen < limit + (512 << 10), "{name}: {err}");
        }
        assert!(
            matches!(&err, SourceError::Refused { commit, .. } if *commit == oid(&c1)),
            "{name}: {err}"
        );
        assert!(
            !pack_files(&cfg.cache_dir)
                .iter()
                .any(|p| p.ends_with(".pack")),
            "{name}: a partial pack was kept: {:?}",
            pack_files(&cfg.cache_dir)
        );
        assert_eq!(counters.totals().pack_fetches, 0, "{name}");

        // The next poll refuses it again without downloading anything.
        let again = source::fetch_counted(&cfg, &counters).unwrap_err();
        assert_eq!(
            refused(&again).label(),
            "fetch_too_large",
            "{name}: {again}"
        );
        assert_eq!(counters.totals().pack_fetches, 0, "{name}");

        cfg.max_fetch_bytes = 8 << 20;
        assert_eq!(
            source::fetch(&cfg).unwrap_or_else(|e| panic!("{name}: {e}")),
            FetchOutcome::Updated { commit: oid(&c1) },
            "{name}"
        );
    }
}

/// The per-object limit: libgit2's `file://` transport would hold a 65 MiB object whole (twice),
/// so it is refused before anything is packed, whatever `max_fetch_bytes` allows; over
/// `git://` the same object arrives whole and is hashed as it streams in, but a one-byte change
/// of it arrives as a delta that libgit2 would rebuild in memory, which is refused too.
#[test]
fn objects_held_whole_in_memory_are_limited() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    let repo = WorkRepo::init(&srv.join("fleet"));
    fleet(&repo, "");
    let mut zeros = vec![0u8; (MAX_OBJECT_BYTES + (1 << 20)) as usize];
    std::fs::write(repo.dir.join("zeros.bin"), &zeros).unwrap();
    let c1 = repo.commit("65 MiB of zeros");

    let mut local = SourceConfig::new(repo.file_url(), "main", tmp.path().join("cache-file"));
    local.max_fetch_bytes = 1 << 30;
    let err = source::fetch(&local).unwrap_err();
    let Refusal::FetchTooLarge(TooLarge::Object { size, .. }) = refused(&err) else {
        panic!("{err}");
    };
    assert_eq!(*size, zeros.len() as u64, "{err}");

    let daemon = GitDaemon::start(&srv);
    let mut cfg = SourceConfig::new(daemon.url("fleet"), "main", tmp.path().join("cache-git"));
    cfg.max_fetch_bytes = 1 << 30;
    assert_eq!(
        source::fetch(&cfg).unwrap(),
        FetchOutcome::Updated { commit: oid(&c1) }
    );
    zeros[12345] = 1;
    std::fs::write(repo.dir.join("zeros.bin"), &zeros).unwrap();
    let c2 = repo.commit("one byte changed");
    let err = source::fetch(&cfg).unwrap_err();
    assert!(
        matches!(
            &err,
            SourceError::Refused { commit, reason: Refusal::FetchTooLarge(TooLarge::Rebuilt) }
                if *commit == oid(&c2)
        ),
        "{err}"
    );
}
