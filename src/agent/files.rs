//! Token files, laid out and replaced the way the kubelet updates a Secret volume, so that one
//! consumer reads `<dir>/token` alike in a pod and on a laptop.
//!
//! ```text
//! <dir>/..2026_12_03_05_01_02.123456789/   the files of one version (0700; files 0600)
//! <dir>/..data -> ..2026_12_03_05_01_02.123456789
//! <dir>/token -> ..data/token               one link per key, as a Secret volume has
//! <dir>/expires-at -> ..data/expires-at
//! ```
//!
//! A new version is written into a new timestamped directory and synced; then one `rename` of a
//! `..data` link swaps it in. A reader (or a crash) at any moment sees the old complete version
//! or the new one, never a mix. `..data/.tokenmint.json` records what tokenmint needs to decide
//! later (and marks the tree as tokenmint's: a directory without it is never written).
//!
//! Nothing here follows a link it did not make: the tree must be a real directory, `..data`
//! must name a version directory beside it, files are opened with `O_NOFOLLOW` and created with
//! `O_EXCL` (the caller has checked the directories above the tree, see [`super::trees`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Path, PathBuf};

/// The link to the current version.
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
/// What tokenmint records beside the files of a version.
pub const META: &str = ".tokenmint.json";

/// What tokenmint records about the files it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// `Kind namespace/name` of the resource the files belong to.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The key that signed the token (what bounds the revocation of one that never expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// The current version of a tree: its files and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub files: BTreeMap<String, Vec<u8>>,
    pub meta: Meta,
}

/// What is at a path where tokenmint keeps files.
#[derive(Debug)]
pub enum Found {
    Nothing,
    /// A tree tokenmint wrote.
    Ours(Current),
    /// Something else, and what: never written, never removed.
    Foreign(String),
}

/// Creates one directory, 0700; its parent must exist.
pub fn mkdir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// The version directory `..data` names, if it is one of this tree's (`..<stamp>`, a real
/// directory beside the link).
fn current_version(dir: &Path) -> io::Result<Option<PathBuf>> {
    let target = match fs::read_link(dir.join(DATA)) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // Not a link (EINVAL): not a tree of ours.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = target.to_string_lossy();
    if target.components().count() != 1 || !name.starts_with("..") || name == DATA {
        return Ok(None);
    }
    let version = dir.join(&target);
    Ok(fs::symlink_metadata(&version)
        .is_ok_and(|m| m.is_dir())
        .then_some(version))
}

/// Reads the tree at `dir`.
pub fn read(dir: &Path) -> io::Result<Found> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(e),
        Ok(m) if m.is_symlink() => {
            return Ok(Found::Foreign(format!(
                "{} is a symbolic link",
                dir.display()
            )));
        }
        Ok(m) if !m.is_dir() => {
            return Ok(Found::Foreign(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(_) => {}
    }
    let foreign = || {
        Found::Foreign(format!(
            "{} holds files tokenmint did not write",
            dir.display()
        ))
    };
    let Some(version) = current_version(dir)? else {
        // An empty directory (made by hand for us, or left by a crash before the first
        // version was in place) is not someone else's data.
        return Ok(if fs::read_dir(dir)?.next().is_none() {
            Found::Nothing
        } else {
            foreign()
        });
    };
    let meta = match crate::private_file::read(&version.join(META)) {
        Ok(bytes) => match serde_json::from_slice::<Meta>(&bytes) {
            Ok(meta) => meta,
            Err(_) => return Ok(foreign()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(foreign()),
        Err(e) => return Err(e),
    };
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&version)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == META {
            continue;
        }
        files.insert(name, crate::private_file::read(&entry.path())?);
    }
    Ok(Found::Ours(Current { files, meta }))
}

/// Replaces the files of `dir` with `files` and `meta`, atomically. `dir` must be absent or
/// ours (see [`read`]), its parent a directory of ours.
pub fn write(dir: &Path, files: &BTreeMap<String, Vec<u8>>, meta: &Meta) -> io::Result<()> {
    match mkdir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let version = dir.join(&stamp);
    mkdir(&version)?;
    let write_file = |name: &str, bytes: &[u8]| -> io::Result<()> {
        let mut file = crate::private_file::create_new(&version.join(name))?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    for (name, bytes) in files {
        write_file(name, bytes)?;
    }
    write_file(
        META,
        &serde_json::to_vec_pretty(meta).map_err(io::Error::other)?,
    )?;
    sync_dir(&version)?;
    // The swap: a fresh link renamed over `..data` (rename replaces atomically).
    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    fs::rename(&tmp, dir.join(DATA))?;
    // One link per key; links to keys the new version lacks go.
    for name in files.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(PathBuf::from(DATA).join(name), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.contains_key(&name) {
            fs::remove_file(entry.path())?;
        }
    }
    sync_dir(dir)?;
    // Every other version: the one just replaced, and any left behind by a crash between
    // writing a version and swapping it in.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..")
            && name != DATA
            && name != stamp
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Removes the tree at `dir` if it is ours; leaves anything else alone. Returns whether it
/// removed something.
pub fn remove(dir: &Path) -> io::Result<bool> {
    match read(dir)? {
        Found::Ours(_) => {
            fs::remove_dir_all(dir)?;
            Ok(true)
        }
        Found::Nothing | Found::Foreign(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files(token: &str, expires: Option<&str>) -> BTreeMap<String, Vec<u8>> {
        let mut f = BTreeMap::from([("token".to_owned(), token.as_bytes().to_vec())]);
        if let Some(e) = expires {
            f.insert("expires-at".into(), e.as_bytes().to_vec());
        }
        f
    }

    fn meta(id: &str) -> Meta {
        Meta {
            owner: "DatasourceGrant default/g".into(),
            spec_hash: Some("h".into()),
            token_id: Some(id.into()),
            kid: None,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tokenmint-files-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_version_replaces_the_previous_one_whole() {
        let root = tempdir("replace");
        let dir = root.join("default/g-token");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        write(
            &dir,
            &files("one", Some("2026-01-01T00:00:00Z")),
            &meta("1"),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "one");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("token")), 0o600);
        assert_eq!(mode(&dir.join(DATA)), 0o700);
        assert_eq!(mode(&dir), 0o700);
        // The next version has no expires-at: its link goes too.
        write(&dir, &files("two", None), &meta("2")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "two");
        assert!(fs::symlink_metadata(dir.join("expires-at")).is_err());
        let Found::Ours(current) = read(&dir).unwrap() else {
            panic!("not ours")
        };
        assert_eq!(current.meta.token_id.as_deref(), Some("2"));
        assert_eq!(current.files.keys().collect::<Vec<_>>(), ["token"]);
        // One version directory left, the current one.
        let versions = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("..") && n != DATA
            })
            .count();
        assert_eq!(versions, 1);
        assert!(remove(&dir).unwrap());
        assert!(!dir.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_crash_between_writing_a_version_and_swapping_it_in_leaves_the_old_one_whole() {
        let root = tempdir("crash");
        let dir = root.join("default/g-token");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        write(&dir, &files("old", Some("e1")), &meta("1")).unwrap();
        // What a SIGKILL mid-write leaves: a half-written version never swapped in, and a
        // temporary link.
        let stray = dir.join("..2026_01_01_00_00_00.000000001");
        fs::create_dir_all(&stray).unwrap();
        fs::write(stray.join("token"), "ne").unwrap();
        symlink("..2026_01_01_00_00_00.000000001", dir.join(DATA_TMP)).unwrap();
        let Found::Ours(current) = read(&dir).unwrap() else {
            panic!("not ours")
        };
        assert_eq!(current.files["token"], b"old");
        assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "old");
        // The next write replaces the version and sweeps the leftovers.
        write(&dir, &files("new", Some("e2")), &meta("2")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "new");
        assert!(!stray.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_tree_not_written_by_tokenmint_is_foreign() {
        let root = tempdir("foreign");
        let dir = root.join("theirs");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("token"), "mine, not yours").unwrap();
        assert!(matches!(read(&dir).unwrap(), Found::Foreign(_)));
        assert!(!remove(&dir).unwrap());
        assert_eq!(
            fs::read_to_string(dir.join("token")).unwrap(),
            "mine, not yours"
        );
        fs::write(root.join("file"), "x").unwrap();
        assert!(matches!(
            read(&root.join("file")).unwrap(),
            Found::Foreign(_)
        ));
        assert!(matches!(
            read(&root.join("absent")).unwrap(),
            Found::Nothing
        ));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn links_planted_in_a_tree_are_never_followed() {
        let root = tempdir("links");
        let elsewhere = root.join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(
            elsewhere.join(META),
            r#"{"owner":"DatasourceGrant default/g"}"#,
        )
        .unwrap();
        fs::write(elsewhere.join("token"), "not ours").unwrap();
        // `..data` naming a directory outside the tree: not a tree of ours.
        let dir = root.join("g-token");
        fs::create_dir_all(&dir).unwrap();
        symlink(&elsewhere, dir.join(DATA)).unwrap();
        assert!(matches!(read(&dir).unwrap(), Found::Foreign(_)));
        assert!(!remove(&dir).unwrap());
        // The tree itself a link: foreign, even to a tree of ours.
        let ours = root.join("ours");
        write(&ours, &files("t", None), &meta("1")).unwrap();
        let link = root.join("link");
        symlink(&ours, &link).unwrap();
        assert!(matches!(read(&link).unwrap(), Found::Foreign(m) if m.contains("symbolic link")));
        // A file of a version replaced by a link: not read through it.
        let version = fs::read_link(ours.join(DATA)).unwrap();
        fs::remove_file(ours.join(&version).join("token")).unwrap();
        symlink(elsewhere.join("token"), ours.join(&version).join("token")).unwrap();
        assert!(read(&ours).is_err());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_reader_polling_in_a_loop_never_sees_a_partial_or_mixed_version() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let root = tempdir("race");
        let dir = root.join("default/g-token");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // Token and expiry of one version share a number: a mix would show.
        let version = |n: usize| {
            (
                files(
                    &format!("token-{n}-{}", "x".repeat(4096)),
                    Some(&format!("exp-{n}")),
                ),
                meta(&n.to_string()),
            )
        };
        let (f, m) = version(0);
        write(&dir, &f, &m).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let dir = dir.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    // As a consumer reads a Secret volume: through the `..data` link once, so
                    // both files come from one version.
                    let data = match fs::canonicalize(dir.join(DATA)) {
                        Ok(d) => d,
                        Err(_) => continue,
                    };
                    let (Ok(token), Ok(exp)) = (
                        fs::read_to_string(data.join("token")),
                        fs::read_to_string(data.join("expires-at")),
                    ) else {
                        // The version was removed after we resolved the link: re-resolve.
                        continue;
                    };
                    let n = token.split('-').nth(1).unwrap().to_owned();
                    assert_eq!(exp, format!("exp-{n}"), "mixed versions");
                    assert_eq!(
                        token.len(),
                        format!("token-{n}-").len() + 4096,
                        "partial token"
                    );
                    // And through the top-level link, a whole token (or none, when the
                    // version it resolved was removed meanwhile: readers retry, as with a
                    // Secret volume).
                    if let Ok(whole) = fs::read_to_string(dir.join("token")) {
                        assert!(whole.ends_with(&"x".repeat(4096)), "partial token");
                    }
                    reads += 1;
                }
                reads
            })
        };
        for n in 1..200 {
            let (f, m) = version(n);
            write(&dir, &f, &m).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader
            .join()
            .expect("the reader saw a partial or mixed version");
        assert!(reads > 0);
        fs::remove_dir_all(root).unwrap();
    }
}
