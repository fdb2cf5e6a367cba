//! `source::VerifyMemo`: an idle poll does not check the same signature again, but any change
//! that could change the answer (the commit, the trust roots, a key's validity boundary) makes
//! it check again. Real SSH-signed commits (ssh-keygen) in a real repo.

use std::path::Path;

use bosun::source::{
    Cache, Oid, Refusal, SignersSource, SourceError, Verdict, VerifyConfig, VerifyMemo, VerifyMode,
};

use crate::support::git::{SshKey, WorkRepo};

/// `YYYYMMDD` of the UTC day `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

fn cfg(file: &Path) -> VerifyConfig {
    VerifyConfig {
        mode: VerifyMode::Head,
        allowed_signers: Some(SignersSource::Path(file.to_path_buf())),
        openpgp_keys: Vec::new(),
        allow_history_rewrite: false,
    }
}

fn refusal(r: Result<Verdict, SourceError>) -> Refusal {
    match r {
        Err(e) => e
            .refusal()
            .cloned()
            .unwrap_or_else(|| panic!("not a refusal: {e}")),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

#[test]
fn a_verified_commit_is_remembered_until_something_could_change_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SshKey::generate(tmp.path(), "ops");
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", "hostname: a\n");
    let commit = Oid::from_str(&repo.commit_ssh_signed(&key.private, "signed")).unwrap();
    let cache = Cache::open(&repo.dir.join(".git")).unwrap();
    // The commit is dated now, so checks happen from now on; the key expires in a year.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry_day = now / 86_400 + 365;
    let boundary = expiry_day * 86_400;
    // A cache without the commit: answering from it means the memo was used.
    let empty = Cache::open(&tmp.path().join("empty")).unwrap();
    let signers = tmp.path().join("allowed_signers");
    let line = key.allowed_signers_line("ops@example.invalid");
    let key_part = line.split_once(' ').unwrap().1;
    std::fs::write(
        &signers,
        format!(
            "ops@example.invalid valid-before=\"{}\" {key_part}\n",
            date(expiry_day)
        ),
    )
    .unwrap();
    let cfg = cfg(&signers);
    let verified = Verdict::Verified {
        signer: "ops@example.invalid".into(),
    };

    // Now (the commit is dated now; its date must not be ahead of the time of the check).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(now < boundary, "this test assumes a clock before 2030");
    let mut memo = VerifyMemo::default();
    assert_eq!(memo.verify(&cache, commit, &cfg, now).unwrap(), verified);
    assert_eq!(
        memo.verify(&empty, commit, &cfg, now + 60).unwrap(),
        verified,
        "same commit, same trust roots: answered from memory"
    );
    assert!(
        memo.verify(&empty, commit, &cfg, now - 60).is_err(),
        "an earlier time than the check is checked again"
    );
    // Past the key's valid-before: checked again, and refused.
    assert_eq!(memo.verify(&cache, commit, &cfg, now).unwrap(), verified);
    assert!(matches!(
        refusal(memo.verify(&cache, commit, &cfg, boundary + 86_400 + 1)),
        Refusal::UnknownKey { .. } | Refusal::BadSignature { .. }
    ));
    // A changed allowed signers file is read again (the key is gone: refused).
    assert_eq!(memo.verify(&cache, commit, &cfg, now).unwrap(), verified);
    std::fs::write(&signers, "other@example.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGYq2ZJ5rLQSBMG3rSBjDFB4gYw9sBa0dJyv8KSj6hnO\n").unwrap();
    assert!(matches!(
        refusal(memo.verify(&cache, commit, &cfg, now + 60)),
        Refusal::UnknownKey { .. }
    ));
    // An unreadable file fails closed, never from memory.
    std::fs::write(&signers, format!("{line}\n")).unwrap();
    assert_eq!(memo.verify(&cache, commit, &cfg, now).unwrap(), verified);
    std::fs::remove_file(&signers).unwrap();
    let err = memo.verify(&cache, commit, &cfg, now + 60).unwrap_err();
    assert!(err.refusal().is_none(), "{err}");
}
