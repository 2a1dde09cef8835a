//! Where each tree lives: `OUT/<namespace>/<secretName>`, built from validated names only (a
//! namespace is a DNS label, a Secret name a DNS subdomain: no `/`, never `.` or `..`), so a
//! tree is always a grandchild of OUT. The directories on the way are checked before each
//! read and write: a symlink, a file, or a directory someone else owns or may write where
//! tokenmint expects its own is in the way, and nothing is read or written through it.

use super::files::{self, Found};
use crate::admission::names;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The tree of one Secret: `<namespace>/<secret>` under OUT.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeName {
    namespace: String,
    secret: String,
}

impl TreeName {
    /// The tree of Secret `secret` in `namespace`; refused unless both are valid names.
    pub fn new(namespace: &str, secret: &str) -> Result<Self, String> {
        let problems: Vec<String> = names::label_problems(namespace)
            .into_iter()
            .map(|p| format!("namespace {namespace:?}: {p}"))
            .chain(
                names::subdomain_problems(secret)
                    .into_iter()
                    .map(|p| format!("Secret name {secret:?}: {p}")),
            )
            .collect();
        if problems.is_empty() {
            Ok(TreeName {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
            })
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Display for TreeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.secret)
    }
}

/// The trees under OUT.
#[derive(Debug, Clone)]
pub struct Trees {
    root: PathBuf,
}

/// The effective uid of this process: the owner of every directory tokenmint writes in.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `meta` is a directory only this process's user may write in.
pub fn private_dir(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.uid() == euid() && meta.mode() & 0o022 == 0
}

impl Trees {
    /// The trees under `root` (OUT, absolute).
    pub fn new(root: PathBuf) -> Self {
        Trees { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `OUT/<namespace>/<secret>`.
    pub fn path(&self, tree: &TreeName) -> PathBuf {
        self.root.join(&tree.namespace).join(&tree.secret)
    }

    /// What is in the way at `OUT/<namespace>`, if anything: not a directory of ours (a
    /// symlink, a file, someone else's or a group-writable directory).
    fn namespace_in_way(&self, namespace: &str) -> io::Result<Option<String>> {
        let dir = self.root.join(namespace);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok(m) if m.is_symlink() => Ok(Some(format!("{} is a symbolic link", dir.display()))),
            Ok(m) if !private_dir(&m) => Ok(Some(format!(
                "{} is not a directory only tokenmint's user may write in (owner uid {}, mode {:04o})",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ))),
            Ok(_) => Ok(None),
        }
    }

    /// Reads the tree: what is in the way counts as foreign.
    pub fn read(&self, tree: &TreeName) -> io::Result<Found> {
        if let Some(why) = self.namespace_in_way(&tree.namespace)? {
            return Ok(Found::Foreign(why));
        }
        files::read(&self.path(tree))
    }

    /// Writes a version of the tree (see [`files::write`]); its namespace directory is made
    /// (0700) if missing. The caller read the tree as absent or ours.
    pub fn write(
        &self,
        tree: &TreeName,
        content: &std::collections::BTreeMap<String, Vec<u8>>,
        meta: &files::Meta,
    ) -> io::Result<()> {
        if let Some(why) = self.namespace_in_way(&tree.namespace)? {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, why));
        }
        match files::mkdir(&self.root.join(&tree.namespace)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other?,
        }
        files::write(&self.path(tree), content, meta)
    }

    /// Removes the tree if it is ours; returns whether it did.
    pub fn remove(&self, tree: &TreeName) -> io::Result<bool> {
        if self.namespace_in_way(&tree.namespace)?.is_some() {
            return Ok(false);
        }
        files::remove(&self.path(tree))
    }

    /// The trees tokenmint wrote, as found on disk (a start after a stop finds its own).
    /// Entries whose names could not be ours, and directories in the way, are left out.
    pub fn scan(&self) -> BTreeSet<TreeName> {
        let mut found = BTreeSet::new();
        let Ok(namespaces) = fs::read_dir(&self.root) else {
            return found;
        };
        for namespace in namespaces.flatten() {
            let namespace = namespace.file_name().to_string_lossy().into_owned();
            if !names::label_problems(&namespace).is_empty()
                || !matches!(self.namespace_in_way(&namespace), Ok(None))
            {
                continue;
            }
            let Ok(trees) = fs::read_dir(self.root.join(&namespace)) else {
                continue;
            };
            for tree in trees.flatten() {
                let secret = tree.file_name().to_string_lossy().into_owned();
                let Ok(name) = TreeName::new(&namespace, &secret) else {
                    continue;
                };
                if matches!(files::read(&self.path(&name)), Ok(Found::Ours(_))) {
                    found.insert(name);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_names_make_trees() {
        assert!(TreeName::new("default", "dashboards-token").is_ok());
        for (namespace, secret) in [
            ("default", "../../escaped"),
            ("default", "/tmp/abs"),
            ("default", "..%2F..%2Fescaped"),
            ("default", ".."),
            ("..", "x"),
            ("team-a", "../team-b/gen-service-key"),
            ("default", &"a".repeat(254)),
        ] {
            assert!(
                TreeName::new(namespace, secret).is_err(),
                "{namespace}/{secret}"
            );
        }
        let trees = Trees::new(PathBuf::from("/out"));
        let path = trees.path(&TreeName::new("team-a", "a.b-token").unwrap());
        assert_eq!(path, Path::new("/out/team-a/a.b-token"));
    }
}
