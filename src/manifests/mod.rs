//! `tokenmint serve --manifests DIR`: ServiceKeys, their key Secrets, DatasourceGrants,
//! GuestTokenRequests and optionally the keyring Secret, read from the YAML files in DIR
//! instead of a cluster.
//!
//! Every `*.yaml`/`*.yml` file directly in DIR is read (in name order), each possibly holding
//! several documents. Each document of ours gets the API server's admission
//! ([`crate::admission`]): names, the CRDs' schemas and CEL rules; a refused one is reported
//! naming the file, the document, the object and the rule. Other kinds (a Deployment beside
//! them, say) are skipped, so a directory written for `kubectl apply` works as is. Secrets may
//! use `data` (base64) or `stringData` (plain text), as kubectl accepts. Objects without
//! `metadata.namespace` are in `default`, as `kubectl apply` would place them.

mod live;

pub use live::LiveManifests;

use crate::admission::{Admitted, schema::SchemaError};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use crate::keyring::{self, Keyring};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
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
        /// Kind and `namespace/name` of the object, as far as known.
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
    /// Every document a strict read refused ([`Manifests::load_dir`]), one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<ManifestError>),
    /// The CRDs compiled into this binary use a rule admission cannot check (a build defect,
    /// caught by tests/crd_admission.rs).
    #[error("cannot admit manifests: {0}")]
    Admission(#[from] SchemaError),
}

/// Where an object is declared; the order of declarations is the manifest order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub file: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)
    }
}

/// An object's identity: kind, namespace, name. The API server stores one object per identity.
pub type Identity = (String, String, String);

/// The objects read from a manifests directory, each kind in manifest order.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub service_keys: Vec<ServiceKey>,
    pub secrets: Vec<Secret>,
    pub datasource_grants: Vec<DatasourceGrant>,
    pub guest_token_requests: Vec<GuestTokenRequest>,
    pub files: Vec<PathBuf>,
    /// Where each object is declared.
    sources: HashMap<Identity, Source>,
    /// Objects declared only by refused documents (no admitted version), with the refusal.
    refused: BTreeMap<Identity, (Source, String)>,
    /// Files, and documents, whose objects cannot be known (not YAML, no kind or name).
    unread: Vec<String>,
}

/// Why an object without an admitted version may still exist, and its files must stay as they
/// are: the API server would still hold the stored object.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// A document declares it, but is refused.
    Refused {
        source: &'a Source,
        message: &'a str,
    },
    /// Somewhere that cannot be read may declare it.
    Unread(&'a [String]),
}

impl std::fmt::Display for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The refusal itself is logged beside (see `agent::report`).
            Held::Refused { source, .. } => write!(f, "its manifest is refused ({source})"),
            Held::Unread(places) => write!(
                f,
                "it may be declared in {}, which cannot be read",
                places.join("; ")
            ),
        }
    }
}

impl Manifests {
    /// Reads every YAML file in `dir`; any refused document is an error (all of them listed).
    pub fn load_dir(dir: &Path) -> Result<Self, ManifestError> {
        let mut live = LiveManifests::new()?;
        let refused = live.reload(dir)?;
        if !refused.is_empty() {
            return Err(ManifestError::Refused(refused));
        }
        Ok(live.merged())
    }

    /// The objects of one YAML text (fixtures, benchmarks); any refused document is an error.
    /// `file` names the text in errors.
    pub fn from_yaml(file: &Path, text: &str) -> Result<Self, ManifestError> {
        let mut live = LiveManifests::new()?;
        let refused = live.replace(vec![(file.to_owned(), live::parse(file, text))]);
        if !refused.is_empty() {
            return Err(ManifestError::Refused(refused));
        }
        Ok(live.merged())
    }

    /// Adds an admitted object declared at `source`.
    pub fn push(&mut self, source: Source, object: Admitted) {
        let sources = &mut self.sources;
        match object {
            Admitted::ServiceKey(o) => keep(sources, &mut self.service_keys, source, o),
            Admitted::DatasourceGrant(o) => keep(sources, &mut self.datasource_grants, source, o),
            Admitted::GuestTokenRequest(o) => {
                keep(sources, &mut self.guest_token_requests, source, o)
            }
            Admitted::Secret(o) => keep(sources, &mut self.secrets, source, o),
        }
    }

    /// Where the `kind` object `namespace/name` is declared (`None` for objects added by hand).
    pub fn source(&self, kind: &str, namespace: &str, name: &str) -> Option<&Source> {
        self.sources
            .get(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
    }

    /// Why the `kind` object `namespace/name`, which has no admitted version, is held (see
    /// [`Held`]); `None` when it is admitted, or known to be declared nowhere.
    pub fn held(&self, kind: &str, namespace: &str, name: &str) -> Option<Held<'_>> {
        let identity = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        if self.sources.contains_key(&identity) {
            return None;
        }
        if let Some((source, message)) = self.refused.get(&identity) {
            return Some(Held::Refused { source, message });
        }
        (!self.unread.is_empty()).then_some(Held::Unread(&self.unread))
    }

    /// The objects declared only by refused documents, and why each is refused.
    pub fn refused(&self) -> impl Iterator<Item = (&Identity, Held<'_>)> {
        self.refused
            .iter()
            .map(|(identity, (source, message))| (identity, Held::Refused { source, message }))
    }

    /// The files and documents whose objects cannot be known.
    pub fn unread(&self) -> &[String] {
        &self.unread
    }

    /// Whether a Secret `namespace/name` is declared.
    pub fn declares_secret(&self, namespace: &str, name: &str) -> bool {
        self.secrets
            .iter()
            .any(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace))
    }

    /// The keyring Secret `name` in `namespace`, if among the manifests.
    pub fn keyring(&self, namespace: &str, name: &str) -> Result<Option<Keyring>, ManifestError> {
        let Some(secret) = self
            .secrets
            .iter()
            .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace))
        else {
            return Ok(None);
        };
        let err = |message: String| ManifestError::Keyring {
            file: self
                .source("Secret", namespace, name)
                .map(|s| s.file.clone())
                .unwrap_or_default(),
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

/// Adds `object` (in `default` unless it names a namespace) to `list`, and where it is declared
/// to `sources`.
fn keep<K: kube::Resource<DynamicType = ()>>(
    sources: &mut HashMap<Identity, Source>,
    list: &mut Vec<K>,
    source: Source,
    mut object: K,
) {
    let meta = object.meta_mut();
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    let identity = (
        K::kind(&()).into_owned(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    sources.insert(identity, source);
    list.push(object);
}
