//! The manifests of a directory, re-read on change, with the API server's update semantics: an
//! object is known by its kind, namespace and name; a refused edit keeps the object's last good
//! version (as the API server keeps the stored object when it refuses an update), wherever the
//! object is declared; a file that does not parse keeps every object it last held; and of two
//! documents declaring one object, the later is refused. An object declared only by refused
//! documents (no last good version: at start, say), and any object while a file or document
//! cannot be read, is *held* ([`super::Held`]): the agent keeps its files as they are.

use super::{Identity, ManifestError, Manifests, Source, yaml_files};
use crate::admission::{Admission, Admitted};
use crate::crd::GROUP;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The objects of a manifests directory as last admitted.
#[derive(Debug)]
pub struct LiveManifests {
    admission: Admission,
    objects: BTreeMap<Identity, (Source, Admitted)>,
    files: Vec<PathBuf>,
    /// The last read's objects without an admitted version, and its unreadable places.
    held: Unknown,
}

/// What a read could not admit and has no last good version of.
#[derive(Debug, Default)]
struct Unknown {
    /// Objects whose only declarations are refused, with the first refusal.
    refused: BTreeMap<Identity, (Source, String)>,
    /// Files that do not parse and documents without a kind or name.
    unread: Vec<String>,
}

impl LiveManifests {
    /// Compiles the CRDs' rules (once: every reload reuses them).
    pub fn new() -> Result<Self, ManifestError> {
        Ok(LiveManifests {
            admission: Admission::new()?,
            objects: BTreeMap::new(),
            files: Vec::new(),
            held: Unknown::default(),
        })
    }

    /// Re-reads every file of `dir`. Returns what was refused (each document naming its file,
    /// index, object and rule); the rest is in place. Err only when the directory itself
    /// cannot be read (everything is then kept as it was).
    pub fn reload(&mut self, dir: &Path) -> Result<Vec<ManifestError>, ManifestError> {
        let files = yaml_files(dir)?;
        let parsed = files
            .iter()
            .map(|file| (file.clone(), read(file)))
            .collect();
        Ok(self.replace(parsed))
    }

    /// Replaces the objects with those of `files` (each parsed, or why not), in order.
    pub(super) fn replace(
        &mut self,
        files: Vec<(PathBuf, Result<Vec<Value>, ManifestError>)>,
    ) -> Vec<ManifestError> {
        let mut fresh = BTreeMap::new();
        // The first declaration of each object in this read, admitted or not.
        let mut declared: HashMap<Identity, Source> = HashMap::new();
        let mut refused = Vec::new();
        let mut unknown = Unknown::default();
        let names = files.iter().map(|(file, _)| file.clone()).collect();
        for (file, docs) in files {
            let docs = match docs {
                Ok(docs) => docs,
                Err(e) => {
                    refused.push(e);
                    unknown.unread.push(file.display().to_string());
                    // Unreadable now: the objects it held keep their last good version.
                    for (identity, (source, object)) in &self.objects {
                        if source.file == file && !declared.contains_key(identity) {
                            declared.insert(identity.clone(), source.clone());
                            fresh.insert(identity.clone(), (source.clone(), object.clone()));
                        }
                    }
                    continue;
                }
            };
            for (i, doc) in docs.into_iter().enumerate() {
                let source = Source {
                    file: file.clone(),
                    document: i + 1,
                };
                let read = Read {
                    declared: &mut declared,
                    fresh: &mut fresh,
                    refused: &mut refused,
                    unknown: &mut unknown,
                };
                self.admit(doc, source, read);
            }
        }
        self.objects = fresh;
        self.files = names;
        self.held = unknown;
        refused
    }

    /// Admits one document into `fresh`, or records why not.
    fn admit(&self, doc: Value, source: Source, read: Read<'_>) {
        let Read {
            declared,
            fresh,
            refused,
            unknown,
        } = read;
        if doc.is_null() {
            return; // an empty document, e.g. after a trailing `---`
        }
        let head = match Head::of(&doc) {
            Ok(head) => head,
            Err(message) => {
                unknown.unread.push(source.to_string());
                refused.push(document_error(&source, "?".into(), message));
                return;
            }
        };
        let what = head.what();
        let identity = head.identity();
        if let Some(identity) = &identity {
            if let Some(first) = declared.get(identity) {
                let message = format!("{what} is already declared in {first}; this one is ignored");
                refused.push(document_error(&source, what, message));
                return;
            }
            declared.insert(identity.clone(), source.clone());
        }
        match self.admission.admit(doc) {
            Ok(Some(object)) => {
                if let Some(identity) = identity {
                    fresh.insert(identity, (source, object));
                }
            }
            Ok(None) => tracing::debug!(%source, %what, "not a kind tokenmint reads; skipped"),
            Err(refusal) => {
                let mut message = refusal.0;
                let last_good = identity.as_ref().and_then(|id| self.objects.get(id));
                match (identity, last_good) {
                    (Some(identity), Some((_, last_good))) => {
                        message.push_str(" (the last admitted version stays in effect)");
                        fresh.insert(identity, (source.clone(), last_good.clone()));
                    }
                    (Some(identity), None) => {
                        let refusal = (source.clone(), message.clone());
                        unknown.refused.insert(identity, refusal);
                    }
                    // Of our kinds, but no name: which object it is cannot be known.
                    (None, _) if head.ours => unknown.unread.push(source.to_string()),
                    (None, _) => {}
                }
                refused.push(document_error(&source, what, message));
            }
        }
    }

    /// Every object, in manifest order.
    pub fn merged(&self) -> Manifests {
        let mut declared: Vec<&(Source, Admitted)> = self.objects.values().collect();
        declared.sort_by(|a, b| a.0.cmp(&b.0));
        let mut manifests = Manifests {
            files: self.files.clone(),
            refused: self.held.refused.clone(),
            unread: self.held.unread.clone(),
            ..Manifests::default()
        };
        for (source, object) in declared {
            manifests.push(source.clone(), object.clone());
        }
        manifests
    }
}

/// The state of one read, as its documents are admitted.
struct Read<'r> {
    /// The first declaration of each object in this read, admitted or not.
    declared: &'r mut HashMap<Identity, Source>,
    fresh: &'r mut BTreeMap<Identity, (Source, Admitted)>,
    refused: &'r mut Vec<ManifestError>,
    unknown: &'r mut Unknown,
}

/// What a document says it is, before admission.
struct Head {
    kind: String,
    namespace: String,
    name: Option<String>,
    /// A kind admission judges (ours, or a Secret): one object per identity.
    ours: bool,
}

impl Head {
    fn of(doc: &Value) -> Result<Head, String> {
        let Some(object) = doc.as_object() else {
            return Err(
                "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
            );
        };
        let (Some(api_version), Some(kind)) = (
            object.get("apiVersion").and_then(Value::as_str),
            object.get("kind").and_then(Value::as_str),
        ) else {
            return Err("not a Kubernetes object: apiVersion and kind are required".into());
        };
        let meta = |key| {
            doc.pointer(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        Ok(Head {
            kind: kind.to_owned(),
            namespace: meta("/metadata/namespace")
                .unwrap_or(super::DEFAULT_NAMESPACE)
                .to_owned(),
            name: meta("/metadata/name").map(str::to_owned),
            ours: group == GROUP || (api_version == "v1" && kind == "Secret"),
        })
    }

    fn what(&self) -> String {
        let name = self.name.as_deref().unwrap_or("<unnamed>");
        format!("{} {}/{name}", self.kind, self.namespace)
    }

    fn identity(&self) -> Option<Identity> {
        let name = self.name.clone().filter(|_| self.ours)?;
        Some((self.kind.clone(), self.namespace.clone(), name))
    }
}

fn document_error(source: &Source, what: String, message: String) -> ManifestError {
    ManifestError::Document {
        file: source.file.clone(),
        document: source.document,
        what,
        message,
    }
}

/// The documents of one file.
fn read(file: &Path) -> Result<Vec<Value>, ManifestError> {
    let text = std::fs::read_to_string(file).map_err(|e| ManifestError::File {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    parse(file, &text)
}

/// The documents of one YAML text; `file` names it in errors.
pub(super) fn parse(file: &Path, text: &str) -> Result<Vec<Value>, ManifestError> {
    serde_saphyr::from_multiple(text).map_err(|e| ManifestError::File {
        file: file.to_owned(),
        // Without the source lines the error would quote: they may hold a key.
        message: format!("not valid YAML: {}", e.without_snippet()),
    })
}
