//! Kubeconfig reading for the apiserver and node checks: which server to talk to, which CA to
//! trust and which credentials to present.
//!
//! Two stages, so the parsing part is pure:
//! - [`KubeconfigRefs::parse`] turns the YAML text into the selected cluster/user, where every
//!   certificate, key and token is either inline data or a file path (no I/O).
//! - [`Kubeconfig::load`] reads the kubeconfig and every referenced file under a root
//!   directory (bosun's `--root`) and returns PEM bytes and the token.
//!
//! Selection follows kubectl: the `current-context` when set, else the first cluster and the
//! first user. Relative file paths are relative to the kubeconfig's directory, as in kubectl.
//! Every error names the kubeconfig path and the offending field. Tokens are kept in
//! [`Secret`] and never printed.

use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::config::Secret;

/// A kubeconfig problem, always naming the kubeconfig (as given, before root resolution).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The kubeconfig or a file it references (CA, client certificate or key, token) cannot be
    /// read.
    #[error("kubeconfig {path}: cannot read {file}: {source}")]
    Read {
        /// The kubeconfig, as given.
        path: String,
        /// The host path that could not be read (with the field naming it, for referenced files).
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a kubeconfig YAML document.
    #[error("kubeconfig {path}: not a valid kubeconfig YAML document: {message}")]
    Parse {
        /// The kubeconfig, as given.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A field is missing or unusable: no cluster or server, an unknown context, bad base64 or
    /// PEM, an empty token file, a server URL that is not `http(s)://`.
    #[error("kubeconfig {path}: {field}: {reason}")]
    Field {
        /// The kubeconfig, as given.
        path: String,
        /// The field (`clusters[default].cluster.server`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a certificate, key or token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum DataRef {
    /// Decoded inline data (`*-data` fields, `token`).
    Inline(Vec<u8>),
    /// A file path exactly as written in the kubeconfig.
    File(String),
}

impl std::fmt::Debug for DataRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Inline data may be a key or a token: never print it.
            DataRef::Inline(d) => write!(f, "Inline(<{} bytes>)", d.len()),
            DataRef::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// The selected cluster and user of a kubeconfig, with data not yet read from files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigRefs {
    /// `clusters[NAME]`, for messages.
    pub cluster_name: String,
    /// `users[NAME]`, when a user was selected.
    pub user_name: Option<String>,
    /// `cluster.server`: the apiserver base URL.
    pub server: String,
    /// `certificate-authority(-data)`: the CA to trust.
    pub ca: Option<DataRef>,
    /// `insecure-skip-tls-verify`: do not verify the server's certificate.
    pub insecure_skip_tls_verify: bool,
    /// `client-certificate(-data)`.
    pub client_cert: Option<DataRef>,
    /// `client-key(-data)`.
    pub client_key: Option<DataRef>,
    /// `token` or `tokenFile`: a bearer token.
    pub token: Option<DataRef>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawKubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    clusters: Vec<RawClusterEntry>,
    contexts: Vec<RawContextEntry>,
    users: Vec<RawUserEntry>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawClusterEntry {
    name: String,
    cluster: Option<RawCluster>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority")]
    certificate_authority: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify")]
    insecure_skip_tls_verify: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContextEntry {
    name: String,
    context: Option<RawContext>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContext {
    cluster: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUserEntry {
    name: String,
    user: Option<RawUser>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUser {
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
}

impl KubeconfigRefs {
    /// Parses kubeconfig YAML and selects the cluster and user. Pure: no files are read.
    /// `path` is only used in error messages.
    pub fn parse(text: &str, path: &str) -> Result<KubeconfigRefs, KubeconfigError> {
        let raw: RawKubeconfig =
            serde_saphyr::from_str(text).map_err(|e| KubeconfigError::Parse {
                path: path.to_string(),
                message: e.to_string(),
            })?;
        let field_err = |field: String, reason: &str| field_error(path, field, reason);
        let (cluster, user) = select(&raw, path)?;

        let cfield = format!("clusters[{}].cluster", cluster.name);
        let c = cluster
            .cluster
            .as_ref()
            .ok_or_else(|| field_err(cfield.clone(), "missing"))?;
        let server = c
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| field_err(format!("{cfield}.server"), "missing"))?;
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(field_err(
                format!("{cfield}.server"),
                &format!("expected an http(s):// URL, found {server:?}"),
            ));
        }
        let ca = pick(
            path,
            &cfield,
            "certificate-authority-data",
            c.certificate_authority_data.as_deref(),
            c.certificate_authority.as_deref(),
        )?;

        let user = match user {
            None => UserRefs::default(),
            Some(u) => user_refs(u, path)?,
        };

        Ok(KubeconfigRefs {
            cluster_name: cluster.name.clone(),
            user_name: user.name,
            server: server.trim_end_matches('/').to_string(),
            ca,
            insecure_skip_tls_verify: c.insecure_skip_tls_verify.unwrap_or(false),
            client_cert: user.cert,
            client_key: user.key,
            token: user.token,
        })
    }
}

/// A [`KubeconfigError::Field`] about `field` of the kubeconfig at `path`.
fn field_error(path: &str, field: String, reason: &str) -> KubeconfigError {
    KubeconfigError::Field {
        path: path.to_string(),
        field,
        reason: reason.to_string(),
    }
}

/// The cluster and user a kubeconfig selects: those its `current-context` names (each must be
/// defined; a context without a user selects none), else the first cluster and the first
/// user. Pure.
fn select<'k>(
    raw: &'k RawKubeconfig,
    path: &str,
) -> Result<(&'k RawClusterEntry, Option<&'k RawUserEntry>), KubeconfigError> {
    let field_err = |field: String, reason: &str| field_error(path, field, reason);
    let current = raw.current_context.as_deref().filter(|c| !c.is_empty());
    Ok(match current {
        Some(ctx_name) => {
            let ctx = raw
                .contexts
                .iter()
                .find(|c| c.name == ctx_name)
                .ok_or_else(|| {
                    field_err(
                        "current-context".into(),
                        &format!("context {ctx_name:?} is not defined under contexts"),
                    )
                })?;
            let ctx_field = format!("contexts[{ctx_name}].context");
            let body = ctx
                .context
                .as_ref()
                .ok_or_else(|| field_err(ctx_field.clone(), "missing"))?;
            let cluster_name = body
                .cluster
                .as_deref()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| field_err(format!("{ctx_field}.cluster"), "missing"))?;
            let cluster = raw
                .clusters
                .iter()
                .find(|c| c.name == cluster_name)
                .ok_or_else(|| {
                    field_err(
                        format!("{ctx_field}.cluster"),
                        &format!("cluster {cluster_name:?} is not defined under clusters"),
                    )
                })?;
            let user = match body.user.as_deref().filter(|u| !u.is_empty()) {
                None => None,
                Some(user_name) => Some(
                    raw.users
                        .iter()
                        .find(|u| u.name == user_name)
                        .ok_or_else(|| {
                            field_err(
                                format!("{ctx_field}.user"),
                                &format!("user {user_name:?} is not defined under users"),
                            )
                        })?,
                ),
            };
            (cluster, user)
        }
        None => {
            let cluster = raw.clusters.first().ok_or_else(|| {
                field_err(
                    "clusters".into(),
                    "no cluster defined (and no current-context)",
                )
            })?;
            (cluster, raw.users.first())
        }
    })
}

/// The selected user's credentials, with data not yet read from files.
#[derive(Default)]
struct UserRefs {
    /// `users[NAME]`.
    name: Option<String>,
    cert: Option<DataRef>,
    key: Option<DataRef>,
    token: Option<DataRef>,
}

/// The credentials of user entry `u`: a client certificate and key (both or neither; data
/// over file, as kubectl does) and a token (inline over `tokenFile`). Pure.
fn user_refs(u: &RawUserEntry, path: &str) -> Result<UserRefs, KubeconfigError> {
    let field_err = |field: String, reason: &str| field_error(path, field, reason);
    let ufield = format!("users[{}].user", u.name);
    Ok(match u.user.as_ref() {
        None => UserRefs {
            name: Some(u.name.clone()),
            ..UserRefs::default()
        },
        Some(body) => {
            let cert = pick(
                path,
                &ufield,
                "client-certificate-data",
                body.client_certificate_data.as_deref(),
                body.client_certificate.as_deref(),
            )?;
            let key = pick(
                path,
                &ufield,
                "client-key-data",
                body.client_key_data.as_deref(),
                body.client_key.as_deref(),
            )?;
            match (&cert, &key) {
                (Some(_), None) => {
                    return Err(field_err(
                        format!("{ufield}.client-key-data"),
                        "client certificate given without a client key",
                    ))
                }
                (None, Some(_)) => {
                    return Err(field_err(
                        format!("{ufield}.client-certificate-data"),
                        "client key given without a client certificate",
                    ))
                }
                _ => {}
            }
            let token = match (
                body.token.as_deref().filter(|t| !t.is_empty()),
                body.token_file.as_deref().filter(|t| !t.is_empty()),
            ) {
                (Some(t), _) => Some(DataRef::Inline(t.as_bytes().to_vec())),
                (None, Some(f)) => Some(DataRef::File(f.to_string())),
                (None, None) => None,
            };
            UserRefs {
                name: Some(u.name.clone()),
                cert,
                key,
                token,
            }
        }
    })
}

/// Picks base64 `data` (field `data_field`) over a file path (kubectl's precedence).
fn pick(
    path: &str,
    parent: &str,
    data_field: &str,
    data: Option<&str>,
    file: Option<&str>,
) -> Result<Option<DataRef>, KubeconfigError> {
    if let Some(d) = data.map(str::trim).filter(|d| !d.is_empty()) {
        // Tolerate line-wrapped base64.
        let compact: String = d.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| KubeconfigError::Field {
                path: path.to_string(),
                field: format!("{parent}.{data_field}"),
                reason: format!("not valid base64: {e}"),
            })?;
        return Ok(Some(DataRef::Inline(bytes)));
    }
    Ok(file
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| DataRef::File(f.to_string())))
}

/// PEM client certificate chain and key.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// The PEM private key (never printed).
    pub key_pem: Secret,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

impl ClientIdentity {
    /// Certificate chain followed by the key, as [`reqwest::Identity::from_pem`] wants it.
    pub fn combined_pem(&self) -> Vec<u8> {
        let mut out = self.cert_pem.clone();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(self.key_pem.expose().as_bytes());
        out
    }
}

/// A kubeconfig with every referenced file read: ready to build an HTTPS client from.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    /// The kubeconfig path as given (absolute on the node), for messages.
    pub path: String,
    /// Server base URL without a trailing `/`.
    pub server: String,
    /// PEM CA bundle to trust (instead of the built-in roots) when set.
    pub ca_pem: Option<Vec<u8>>,
    /// Do not verify the server's certificate (the kubeconfig asks for it).
    pub insecure_skip_tls_verify: bool,
    /// Client certificate and key, when the user has them.
    pub identity: Option<ClientIdentity>,
    /// Bearer token, when the user has one.
    pub token: Option<Secret>,
}

impl Kubeconfig {
    /// Reads the kubeconfig at `path` (an absolute node path, resolved under `root`) and every
    /// file it references. Reads from disk; writes nothing.
    pub fn load(root: &Path, path: &str) -> Result<Kubeconfig, KubeconfigError> {
        let host_path = resolve_under_root(root, Path::new("/"), path);
        let text = std::fs::read_to_string(&host_path).map_err(|source| KubeconfigError::Read {
            path: path.to_string(),
            file: host_path.display().to_string(),
            source,
        })?;
        let refs = KubeconfigRefs::parse(&text, path)?;
        let base_dir = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let read = |r: &DataRef, field: String| -> Result<Vec<u8>, KubeconfigError> {
            match r {
                DataRef::Inline(d) => Ok(d.clone()),
                DataRef::File(f) => {
                    let p = resolve_under_root(root, &base_dir, f);
                    std::fs::read(&p).map_err(|source| KubeconfigError::Read {
                        path: path.to_string(),
                        file: format!("{} ({field})", p.display()),
                        source,
                    })
                }
            }
        };
        let cfield = format!("clusters[{}].cluster", refs.cluster_name);
        let ufield = format!("users[{}].user", refs.user_name.as_deref().unwrap_or(""));
        let ca_pem = refs
            .ca
            .as_ref()
            .map(|r| read(r, format!("{cfield}.certificate-authority")))
            .transpose()?;
        if let Some(ca) = &ca_pem {
            require_pem(
                path,
                &format!("{cfield}.certificate-authority"),
                ca,
                "CERTIFICATE",
            )?;
        }
        let identity = match (&refs.client_cert, &refs.client_key) {
            (Some(c), Some(k)) => {
                let cert_pem = read(c, format!("{ufield}.client-certificate"))?;
                require_pem(
                    path,
                    &format!("{ufield}.client-certificate"),
                    &cert_pem,
                    "CERTIFICATE",
                )?;
                let key_pem = read(k, format!("{ufield}.client-key"))?;
                require_pem(
                    path,
                    &format!("{ufield}.client-key"),
                    &key_pem,
                    "PRIVATE KEY",
                )?;
                let key_pem = String::from_utf8(key_pem).map_err(|_| KubeconfigError::Field {
                    path: path.to_string(),
                    field: format!("{ufield}.client-key"),
                    reason: "not PEM text".into(),
                })?;
                Some(ClientIdentity {
                    cert_pem,
                    key_pem: Secret(key_pem),
                })
            }
            _ => None,
        };
        let token = match &refs.token {
            None => None,
            Some(r) => {
                let bytes = read(r, format!("{ufield}.tokenFile"))?;
                let t = String::from_utf8(bytes).map_err(|_| KubeconfigError::Field {
                    path: path.to_string(),
                    field: format!("{ufield}.token"),
                    reason: "not UTF-8 text".into(),
                })?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(KubeconfigError::Field {
                        path: path.to_string(),
                        field: format!("{ufield}.tokenFile"),
                        reason: "the token file is empty".into(),
                    });
                }
                Some(Secret(t))
            }
        };
        Ok(Kubeconfig {
            path: path.to_string(),
            server: refs.server,
            ca_pem,
            insecure_skip_tls_verify: refs.insecure_skip_tls_verify,
            identity,
            token,
        })
    }
}

impl Kubeconfig {
    /// Applies this kubeconfig's TLS settings to `builder`: trust exactly its CA when it names
    /// one (as kubectl does), present its client certificate, and skip verification only when
    /// `insecure-skip-tls-verify` says so. Pure apart from parsing the PEM data.
    pub fn apply_tls(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, KubeconfigError> {
        let field_err = |field: &str, reason: String| KubeconfigError::Field {
            path: self.path.clone(),
            field: field.to_string(),
            reason,
        };
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                field_err(
                    "certificate-authority",
                    format!("not a valid PEM certificate bundle: {e}"),
                )
            })?;
            if certs.is_empty() {
                return Err(field_err(
                    "certificate-authority",
                    "no certificate found".into(),
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(id) = &self.identity {
            let identity = reqwest::Identity::from_pem(&id.combined_pem()).map_err(|e| {
                field_err(
                    "client-certificate",
                    format!("not a usable PEM certificate and key: {e}"),
                )
            })?;
            builder = builder.identity(identity);
        }
        if self.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

/// Checks that `data` looks like PEM with a `-----BEGIN ...<kind>-----` block.
fn require_pem(path: &str, field: &str, data: &[u8], kind: &str) -> Result<(), KubeconfigError> {
    let text = String::from_utf8_lossy(data);
    let ok = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if ok {
        Ok(())
    } else {
        Err(KubeconfigError::Field {
            path: path.to_string(),
            field: field.to_string(),
            reason: format!("expected PEM data with a {kind} block"),
        })
    }
}

/// Maps a node path to the host path under `root`. Relative paths are taken relative to
/// `base` (a node directory). `..` is resolved lexically and can never climb above `root`.
pub fn resolve_under_root(root: &Path, base: &Path, path: &str) -> PathBuf {
    let joined = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        base.join(path)
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for comp in joined.components() {
        match comp {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_STYLE: &str = r#"
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFBQQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://127.0.0.1:6443/
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
"#;

    #[test]
    fn parses_k3s_style_kubeconfig_with_inline_data() {
        let r = KubeconfigRefs::parse(K3S_STYLE, "/etc/rancher/k3s/k3s.yaml").unwrap();
        assert_eq!(r.server, "https://127.0.0.1:6443");
        assert_eq!(r.cluster_name, "default");
        assert_eq!(r.user_name.as_deref(), Some("default"));
        assert!(
            matches!(&r.ca, Some(DataRef::Inline(d)) if d.starts_with(b"-----BEGIN CERTIFICATE"))
        );
        assert_eq!(r.client_cert, Some(DataRef::Inline(b"cert".to_vec())));
        assert_eq!(r.client_key, Some(DataRef::Inline(b"key".to_vec())));
        assert_eq!(r.token, None);
    }

    #[test]
    fn current_context_selects_named_cluster_and_user() {
        let text = r#"
current-context: prod
clusters:
- name: dev
  cluster: { server: "https://dev:6443" }
- name: prod
  cluster: { server: "https://prod:6443", certificate-authority: ca.crt }
contexts:
- name: prod
  context: { cluster: prod, user: admin }
users:
- name: other
  user: { token: nope }
- name: admin
  user: { tokenFile: /var/lib/token, client-certificate: /c.crt, client-key: /c.key }
"#;
        let r = KubeconfigRefs::parse(text, "/k.yaml").unwrap();
        assert_eq!(r.server, "https://prod:6443");
        assert_eq!(r.ca, Some(DataRef::File("ca.crt".into())));
        assert_eq!(r.token, Some(DataRef::File("/var/lib/token".into())));
        assert_eq!(r.client_cert, Some(DataRef::File("/c.crt".into())));
        assert_eq!(r.client_key, Some(DataRef::File("/c.key".into())));
    }

    #[test]
    fn without_current_context_first_cluster_and_user_are_used() {
        let text = r#"
clusters:
- name: a
  cluster: { server: "https://a:6443" }
- name: b
  cluster: { server: "https://b:6443" }
users:
- name: u1
  user: { token: abc }
"#;
        let r = KubeconfigRefs::parse(text, "/k.yaml").unwrap();
        assert_eq!(r.server, "https://a:6443");
        assert_eq!(r.token, Some(DataRef::Inline(b"abc".to_vec())));
    }

    #[test]
    fn errors_name_the_kubeconfig_and_field() {
        let missing_ctx = "current-context: nope\nclusters: []\n";
        let e = KubeconfigRefs::parse(missing_ctx, "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/k.yaml") && e.contains("current-context"),
            "{e}"
        );

        let no_server = "clusters:\n- name: c\n  cluster: {}\n";
        let e = KubeconfigRefs::parse(no_server, "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("clusters[c].cluster.server"), "{e}");

        let bad_b64 = "clusters:\n- name: c\n  cluster: {server: 'https://x', certificate-authority-data: '!!!'}\n";
        let e = KubeconfigRefs::parse(bad_b64, "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("certificate-authority-data") && e.contains("base64"),
            "{e}"
        );

        let not_url = "clusters:\n- name: c\n  cluster: {server: '127.0.0.1:6443'}\n";
        let e = KubeconfigRefs::parse(not_url, "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http(s)://"), "{e}");

        let e = KubeconfigRefs::parse("clusters: [", "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/k.yaml"), "{e}");

        let cert_only = "clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n  user: {client-certificate: /a}\n";
        let e = KubeconfigRefs::parse(cert_only, "/etc/k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("users[u].user.client-key-data"), "{e}");
    }

    #[test]
    fn resolve_under_root_never_escapes_root() {
        let root = Path::new("/tmp/r");
        assert_eq!(
            resolve_under_root(root, Path::new("/etc/rancher/k3s"), "/etc/x"),
            PathBuf::from("/tmp/r/etc/x")
        );
        assert_eq!(
            resolve_under_root(root, Path::new("/etc/rancher/k3s"), "certs/ca.crt"),
            PathBuf::from("/tmp/r/etc/rancher/k3s/certs/ca.crt")
        );
        assert_eq!(
            resolve_under_root(root, Path::new("/etc"), "../../../../x"),
            PathBuf::from("/tmp/r/x")
        );
    }
}
