//! Private files (the keyring, the revocation denylist) written so that no one else's link can
//! redirect them: each write goes to a temporary file of a fresh random name, created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` (never an existing file, never through a symlink), made
//! 0600 on the open file, synced, then renamed over the target. Reads refuse a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every private file.
pub const MODE: u32 = 0o600;

/// Opens a file this process creates: fresh (`O_EXCL`), not through a symlink
/// (`O_NOFOLLOW`), 0600 set on the open file whatever the umask.
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(MODE))?;
    Ok(file)
}

/// Opens a file for reading, refusing a symlink (`ELOOP`, reported as such).
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other(format!("{} is a symbolic link", path.display()))
            } else {
                e
            }
        })
}

/// The content of `path` (see [`open`]).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Replaces `path` with `bytes` atomically: a reader sees the old content or the new, and a
/// crash leaves one of them (at worst a stray temporary file, which nothing reads).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    let tmp = temporary(path);
    let written = (|| {
        let mut file = create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// A fresh temporary name beside `path`: `.<name>.<random>.tmp`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn writes_never_follow_a_planted_link_and_reads_refuse_one() {
        let dir = std::env::temp_dir().join(format!(
            "tokenmint-private-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        let target = dir.join("keyring.json");
        // Links at the names a predictable writer would use.
        symlink(&victim, dir.join("keyring.tmp")).unwrap();
        symlink(&victim, dir.join("keyring.json.tmp")).unwrap();
        write(&target, b"secret").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(read(&target).unwrap(), b"secret");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A link in place of the file itself: replaced by the rename, never written through.
        fs::remove_file(&target).unwrap();
        symlink(&victim, &target).unwrap();
        let refused = read(&target).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        write(&target, b"again").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
        // O_EXCL: an existing file is never opened by create_new.
        assert!(create_new(&victim).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
