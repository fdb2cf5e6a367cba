//! OpenPGP commit signatures: a keyring of armored public keys from the agent config, and
//! verification of git's detached `-----BEGIN PGP SIGNATURE-----` over the signed commit data.
//!
//! Invariants:
//! - Keys are checked when loaded (self-signatures and subkey bindings must verify); a key that
//!   does not is a config error, not a silently smaller keyring.
//! - A signature is checked only against keys whose id or fingerprint it names as issuer (or
//!   every signing-capable key when it names none); no match is `UnknownKey`, a match that does
//!   not verify is `BadSignature`.
//! - Not checked: key expiry and revocation certificates (rotate keys by editing the agent
//!   config).

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::{Fingerprint, KeyDetails, KeyId, VerifyingKey};

use super::verify::Refusal;
use super::SourceError;

/// Trusted OpenPGP public keys.
#[derive(Debug, Clone, Default)]
pub struct OpenPgpKeyring {
    keys: Vec<SignedPublicKey>,
}

impl OpenPgpKeyring {
    /// Parses armored public key blocks (each may hold several keys). Pure.
    pub fn parse(armored: &[String]) -> Result<Self, SourceError> {
        let mut keys = Vec::new();
        for (index, block) in armored.iter().enumerate() {
            let err = |reason: String| SourceError::OpenPgpKey { index, reason };
            let (iter, _headers) = SignedPublicKey::from_string_many(block)
                .map_err(|e| err(format!("not an armored OpenPGP public key: {e}")))?;
            let mut n = 0;
            for key in iter {
                let key = key.map_err(|e| err(format!("unreadable public key: {e}")))?;
                key.verify_bindings().map_err(|e| {
                    err(format!(
                        "key {} has invalid self-signatures: {e}",
                        fingerprint_hex(&key.fingerprint())
                    ))
                })?;
                keys.push(key);
                n += 1;
            }
            if n == 0 {
                return Err(err("contains no public key".to_string()));
            }
        }
        Ok(OpenPgpKeyring { keys })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Primary key fingerprints (upper-case hex), in config order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| fingerprint_hex(&k.fingerprint()))
            .collect()
    }

    /// Verifies an armored detached signature over `signed_data`. Returns the primary key
    /// fingerprint of the signer. Pure.
    pub(crate) fn verify(&self, armored: &str, signed_data: &[u8]) -> Result<String, Refusal> {
        let (sig, _) =
            DetachedSignature::from_string(armored).map_err(|e| Refusal::BadSignature {
                detail: format!("unreadable OpenPGP signature: {e}"),
            })?;
        let issuer_ids: Vec<KeyId> = sig.signature.issuer_key_id().into_iter().cloned().collect();
        let issuer_fps: Vec<Fingerprint> = sig
            .signature
            .issuer_fingerprint()
            .into_iter()
            .cloned()
            .collect();
        let issuers = Issuers {
            ids: issuer_ids,
            fingerprints: issuer_fps,
        };
        // Some(result) for each key the signature names (or every signing key if it names
        // none); the first that verifies wins.
        let mut matched = false;
        let mut last_err = String::new();
        for key in &self.keys {
            let primary = issuers.try_key(&sig, key, key.algorithm().can_sign(), signed_data);
            let subkeys = key.public_subkeys.iter().map(|sub| {
                let bound_for_signing = sub.signatures.iter().any(|s| s.key_flags().sign());
                issuers.try_key(&sig, &sub.key, bound_for_signing, signed_data)
            });
            for outcome in std::iter::once(primary).chain(subkeys).flatten() {
                matched = true;
                match outcome {
                    Ok(()) => return Ok(fingerprint_hex(&key.fingerprint())),
                    Err(e) => last_err = e,
                }
            }
        }
        if matched {
            return Err(Refusal::BadSignature {
                detail: format!("OpenPGP signature does not match the commit: {last_err}"),
            });
        }
        let issuer = issuers
            .fingerprints
            .first()
            .map(fingerprint_hex)
            .or_else(|| issuers.ids.first().map(|id| hex::encode_upper(id.as_ref())))
            .unwrap_or_else(|| "an unnamed issuer".to_string());
        Err(Refusal::UnknownKey {
            key: format!("OpenPGP key {issuer}"),
        })
    }
}

/// Who a signature says made it.
struct Issuers {
    ids: Vec<KeyId>,
    fingerprints: Vec<Fingerprint>,
}

impl Issuers {
    /// `None` when `key` cannot have made the signature (not signing-capable, or not the named
    /// issuer); otherwise whether the signature verifies with it. Lazy: subkeys are tried only
    /// when the primary key did not verify.
    fn try_key<K: VerifyingKey>(
        &self,
        sig: &DetachedSignature,
        key: &K,
        may_sign: bool,
        signed_data: &[u8],
    ) -> Option<Result<(), String>> {
        let named = (self.ids.is_empty() && self.fingerprints.is_empty())
            || self.ids.contains(&key.legacy_key_id())
            || self.fingerprints.contains(&key.fingerprint());
        if !may_sign || !key.algorithm().can_sign() || !named {
            return None;
        }
        Some(sig.verify(key, signed_data).map_err(|e| e.to_string()))
    }
}

fn fingerprint_hex(fp: &Fingerprint) -> String {
    hex::encode_upper(fp.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_key_text_is_a_config_error_naming_the_index() {
        let err = OpenPgpKeyring::parse(&["hello".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("#0"), "{err}");
    }

    #[test]
    fn garbage_signature_is_a_bad_signature() {
        let ring = OpenPgpKeyring::default();
        assert!(matches!(
            ring.verify(
                "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
                b"x"
            ),
            Err(Refusal::BadSignature { .. })
        ));
    }
}
