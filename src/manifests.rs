//! `tokenmint serve --manifests DIR`: ServiceKeys, their key Secrets, DatasourceGrants,
//! GuestTokenRequests and optionally the keyring Secret, read from the YAML files in DIR
//! instead of a cluster.
//!
//! Every `*.yaml`/`*.yml` file directly in DIR is read (in name order), each possibly holding
//! several documents. ServiceKeys and Secrets are kept; other kinds (a Deployment beside them,
//! say) are skipped, so a directory written for `kubectl apply` works as is. Secrets may use
//! `data` (base64) or `stringData` (plain text), as kubectl accepts. Objects without
//! `metadata.namespace` are in `default`, as `kubectl apply` would place them.

use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use crate::keyring::{self, Keyring};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Namespace of objects that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A problem with the manifests, naming the file (and document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifests directory {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("{}, document {document} ({what}): {message}", file.display())]
    Document {
        file: PathBuf,
        /// 1-based index of the document in the file.
        document: usize,
        /// Kind and name of the object, as far as known.
        what: String,
        message: String,
    },
    #[error("{}: the keyring Secret {namespace}/{name}: {message}", file.display())]
    Keyring {
        file: PathBuf,
        namespace: String,
        name: String,
        message: String,
    },
}

/// The objects read from a manifests directory.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub service_keys: Vec<ServiceKey>,
    pub secrets: Vec<Secret>,
    pub datasource_grants: Vec<DatasourceGrant>,
    pub guest_token_requests: Vec<GuestTokenRequest>,
    /// The file each Secret came from, for error messages (same order as `secrets`).
    secret_files: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
}

impl Manifests {
    /// Reads every YAML file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, ManifestError> {
        let files = yaml_files(dir)?;
        let mut manifests = Manifests::default();
        for file in &files {
            manifests.extend(Manifests::load_file(file)?);
        }
        manifests.files = files;
        Ok(manifests)
    }

    /// Reads one YAML file.
    pub fn load_file(file: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|e| ManifestError::File {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let mut manifests = Manifests::default();
        manifests.add_yaml(file, &text)?;
        manifests.files = vec![file.to_owned()];
        Ok(manifests)
    }

    /// Adds the objects of `other`.
    pub fn extend(&mut self, other: Manifests) {
        self.service_keys.extend(other.service_keys);
        self.secrets.extend(other.secrets);
        self.secret_files.extend(other.secret_files);
        self.datasource_grants.extend(other.datasource_grants);
        self.guest_token_requests.extend(other.guest_token_requests);
        self.files.extend(other.files);
    }

    /// Adds the objects of one multi-document YAML text; `file` names it in errors.
    pub fn add_yaml(&mut self, file: &Path, text: &str) -> Result<(), ManifestError> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| ManifestError::File {
                file: file.to_owned(),
                // Without the source lines the error would quote: they may hold a key.
                message: format!("not valid YAML: {}", e.without_snippet()),
            })?;
        for (i, doc) in docs.into_iter().enumerate() {
            let document = i + 1;
            let err = |what: String, message: String| ManifestError::Document {
                file: file.to_owned(),
                document,
                what,
                message,
            };
            if doc.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            let Some(obj) = doc.as_object() else {
                return Err(err(
                    "?".into(),
                    "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
                ));
            };
            let api_version = obj.get("apiVersion").and_then(Value::as_str);
            let kind = obj.get("kind").and_then(Value::as_str);
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>");
            let what = format!("{} {name}", kind.unwrap_or("<no kind>"));
            let (Some(api_version), Some(kind)) = (api_version, kind) else {
                return Err(err(
                    what,
                    "not a Kubernetes object: apiVersion and kind are required".into(),
                ));
            };
            if doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err(err(what, "metadata.name is required".into()));
            }
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            match (group, kind) {
                (crate::crd::GROUP, "ServiceKey") => {
                    let mut sk: ServiceKey = typed(doc).map_err(|e| err(what, e))?;
                    default_namespace(&mut sk.metadata);
                    self.service_keys.push(sk);
                }
                (crate::crd::GROUP, "DatasourceGrant") => {
                    let mut grant: DatasourceGrant = typed(doc).map_err(|e| err(what, e))?;
                    default_namespace(&mut grant.metadata);
                    self.datasource_grants.push(grant);
                }
                (crate::crd::GROUP, "GuestTokenRequest") => {
                    let mut request: GuestTokenRequest = typed(doc).map_err(|e| err(what, e))?;
                    default_namespace(&mut request.metadata);
                    self.guest_token_requests.push(request);
                }
                ("", "Secret") => {
                    let mut secret: Secret = typed_secret(doc).map_err(|e| err(what, e))?;
                    default_namespace(&mut secret.metadata);
                    self.secrets.push(secret);
                    self.secret_files.push(file.to_owned());
                }
                _ => tracing::debug!(file = %file.display(), document, %what, "skipping"),
            }
        }
        Ok(())
    }

    /// The keyring Secret `name` in `namespace`, if among the manifests.
    pub fn keyring(&self, namespace: &str, name: &str) -> Result<Option<Keyring>, ManifestError> {
        let Some((secret, file)) = self
            .secrets
            .iter()
            .zip(&self.secret_files)
            .find(|(s, _)| s.name_any() == name && s.namespace().as_deref() == Some(namespace))
        else {
            return Ok(None);
        };
        let err = |message: String| ManifestError::Keyring {
            file: file.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message,
        };
        let bytes = crate::key_store::secret_value(secret, keyring::SECRET_KEY)
            .ok_or_else(|| err(format!("has no data key {:?}", keyring::SECRET_KEY)))?;
        Keyring::from_json(&bytes)
            .map(Some)
            .map_err(|e| err(e.to_string()))
    }
}

/// The `*.yaml`/`*.yml` files directly in `dir`, in name order.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let dir_err = |source| ManifestError::Dir {
        dir: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(dir_err)?;
    files.retain(|p| {
        p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml")
    });
    files.sort();
    Ok(files)
}

/// The manifests of a directory, file by file, re-read on change: a file that fails to parse
/// keeps the objects of its last good version (and the error is reported).
#[derive(Debug, Default)]
pub struct LiveManifests {
    by_file: std::collections::BTreeMap<PathBuf, Manifests>,
}

impl LiveManifests {
    /// Re-reads every file of `dir`; returns the errors of the files that kept their last good
    /// version (or were skipped, never having parsed).
    pub fn reload(&mut self, dir: &Path) -> Result<Vec<ManifestError>, ManifestError> {
        let files = yaml_files(dir)?;
        self.by_file.retain(|path, _| files.contains(path));
        let mut errors = Vec::new();
        for file in files {
            match Manifests::load_file(&file) {
                Ok(parsed) => {
                    self.by_file.insert(file, parsed);
                }
                Err(e) => errors.push(e),
            }
        }
        Ok(errors)
    }

    /// Every object, all files together.
    pub fn merged(&self) -> Manifests {
        let mut all = Manifests::default();
        for parsed in self.by_file.values() {
            all.extend(parsed.clone());
        }
        all
    }
}

/// A document as a typed object; the error names the offending field, e.g.
/// `spec.principal.id: invalid type: integer `1`, expected a string`.
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// [`typed`] for a Secret: the error names the field but not the problem, whose text may quote
/// the value (`invalid type: integer `1234`, expected a string`), which may be a key.
fn typed_secret(doc: Value) -> Result<Secret, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        format!(
            "{}: not a valid value (not shown: a Secret holds keys)",
            e.path()
        )
    })
}

fn default_namespace(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}
