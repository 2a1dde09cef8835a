//! The two directories `serve --manifests` writes in, checked at start: `--tokens-dir` (OUT,
//! which consumers mount) and `--state-dir` (the keyring and the revocation denylist, which
//! nobody else may read). The state directory is never inside OUT, nor OUT inside it; both
//! belong to the process's user and no one else may write in them (else a planted link could
//! redirect a write). A keyring left at the old default `OUT/.tokenmint/keyring.json` moves to
//! the state directory, so that tokens minted before still verify.

use super::Paths;
use super::trees::euid;
use crate::cli::DEFAULT_STATE_DIR;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// The persisted keyring, in the state directory.
pub const KEYRING_FILE: &str = "keyring.json";
/// Where earlier versions kept the state by default: inside OUT.
const OLD_STATE_DIR: &str = ".tokenmint";

/// Checks, creates (0700) and returns the directories of `serve --manifests`.
pub fn prepare(manifests: &Path, tokens: &Path, state: &Path) -> Result<Paths, String> {
    let absolute = |flag: &str, path: &Path| {
        std::path::absolute(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
    };
    let tokens = absolute("--tokens-dir", tokens)?;
    let state = absolute("--state-dir", state)?;
    not_nested(&tokens, &state)?;
    for (flag, dir) in [("--tokens-dir", &tokens), ("--state-dir", &state)] {
        create(flag, dir)?;
        private(flag, dir)?;
    }
    // Again with every link on the way resolved, now that both exist.
    not_nested(&tokens, &state)?;
    migrate(&tokens, &state)?;
    Ok(Paths {
        manifests: manifests.to_owned(),
        tokens,
        state,
    })
}

fn not_nested(tokens: &Path, state: &Path) -> Result<(), String> {
    let (t, s) = (resolve(tokens), resolve(state));
    let why = "consumers mount the tokens directory, and the keyring there would let them forge any token";
    if s.starts_with(&t) {
        return Err(format!(
            "--state-dir {} is inside --tokens-dir {}: {why}; choose a state directory outside it (the default is {DEFAULT_STATE_DIR} in the working directory)",
            state.display(),
            tokens.display()
        ));
    }
    if t.starts_with(&s) {
        return Err(format!(
            "--tokens-dir {} is inside --state-dir {}: {why}; choose directories side by side",
            tokens.display(),
            state.display()
        ));
    }
    Ok(())
}

/// `path` with the links of its existing part resolved and the rest normalised.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => resolved.push(name),
        }
    }
    resolved
}

fn create(flag: &str, dir: &Path) -> Result<(), String> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{flag} {}: cannot create it: {e}", dir.display())),
    }
}

/// A directory of this process's user that no one else may write in.
fn private(flag: &str, dir: &Path) -> Result<(), String> {
    let meta = fs::metadata(dir).map_err(|e| format!("{flag} {}: {e}", dir.display()))?;
    let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
    if !meta.is_dir() {
        return Err(format!("{flag} {} is not a directory", dir.display()));
    }
    if uid != euid() {
        return Err(format!(
            "{flag} {} is owned by uid {uid}, not by this process's user (uid {}): tokenmint keeps keys and tokens only in directories of its own; chown it or choose another (mode {mode:04o})",
            dir.display(),
            euid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{flag} {} is writable by group or others (owner uid {uid}, mode {mode:04o}): whoever may write there could plant a link that a write would follow; run chmod go-w {}",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Moves a keyring from the old default location, inside OUT, to the state directory. A move
/// that fails stops the start: a fresh keyring would void every token minted before.
fn migrate(tokens: &Path, state: &Path) -> Result<(), String> {
    let old_dir = tokens.join(OLD_STATE_DIR);
    let old = old_dir.join(KEYRING_FILE);
    let new = state.join(KEYRING_FILE);
    match fs::symlink_metadata(&old) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            tracing::warn!(path = %old.display(), "not a regular file: left alone (remove it: consumers mount this directory)");
            return Ok(());
        }
        Err(_) => return Ok(()),
    }
    if fs::symlink_metadata(&new).is_ok() {
        tracing::warn!(old = %old.display(), keyring = %new.display(), "an older keyring is still inside the tokens directory, which consumers mount; tokenmint uses the one in the state directory: remove the old one");
        return Ok(());
    }
    let moved = fs::rename(&old, &new).or_else(|e| {
        if e.raw_os_error() != Some(libc::EXDEV) {
            return Err(e);
        }
        // Another file system: copy (atomically, 0600), then remove.
        crate::private_file::write(&new, &crate::private_file::read(&old)?)?;
        fs::remove_file(&old)
    });
    moved.map_err(|e| {
        format!(
            "cannot move the keyring {} out of the tokens directory (consumers mount it) to {}: {e}",
            old.display(),
            new.display()
        )
    })?;
    tracing::info!(from = %old.display(), to = %new.display(), "moved the keyring out of the tokens directory (consumers mount it) into the state directory; tokens minted before still verify");
    if let Err(e) = fs::remove_dir_all(&old_dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %old_dir.display(), error = %e, "cannot remove the old state directory");
    }
    Ok(())
}
