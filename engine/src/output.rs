//! Writing results so that a crash, a kill or a full disk loses nothing:
//! whole files go to a temporary file in the same directory, flushed to disk,
//! then renamed over the target (the old file stays whole until then), and a
//! record appended to a log (a sweep row) is one write of one whole line,
//! flushed. A log whose last line was cut short is repaired on reading.

use crate::error::{Result, SiftError};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".sift-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| SiftError::io_doing("writing", path, e))?;
    tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_all()).map_err(|e| SiftError::io_doing("writing", path, e))?;
    // On failure the temporary file is removed when dropped.
    tmp.persist(path).map_err(|e| SiftError::io_doing("writing", path, e.error))?;
    Ok(())
}

/// Appends `line` and a newline to `path` in one write, flushed to disk.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    debug_assert!(!line.contains('\n'), "one record per line");
    let mut f = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| SiftError::io_doing("opening", path, e))?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| SiftError::io_doing("appending to", path, e))
}

/// The text of a line-per-record log. A last line without its newline was
/// cut short by a crash: it is dropped from the file (rewritten atomically)
/// and returned, so the caller can say so and redo that record.
pub fn read_log(path: &Path) -> Result<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| SiftError::io_doing("reading", path, e))?;
    if text.is_empty() || text.ends_with('\n') {
        return Ok((text, None));
    }
    let keep = text.rfind('\n').map_or(0, |i| i + 1);
    let (whole, torn) = text.split_at(keep);
    write_atomic(path, whole.as_bytes())?;
    Ok((whole.to_string(), Some(torn.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.csv");
        std::fs::write(&log, "header\nrow 1\nrow 2\nrow 3 cut sh").unwrap();
        let (text, torn) = read_log(&log).unwrap();
        assert_eq!((text.as_str(), torn.as_deref()), ("header\nrow 1\nrow 2\n", Some("row 3 cut sh")));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "header\nrow 1\nrow 2\n");
        append_line(&log, "row 3").unwrap();
        assert_eq!(read_log(&log).unwrap(), ("header\nrow 1\nrow 2\nrow 3\n".to_string(), None));
    }

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new and longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new and longer");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failures_name_the_path_and_what_was_being_done() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("sweep.json");
        let e = write_atomic(&missing, b"x").unwrap_err().to_string();
        assert!(e.starts_with(&format!("writing {}: ", missing.display())), "{e}");
        // A full disk: /dev/full fails every write with ENOSPC.
        let full = Path::new("/dev/full");
        if full.exists() {
            let e = append_line(full, "row").unwrap_err().to_string();
            assert!(e.starts_with("appending to /dev/full: No space left on device"), "{e}");
        } else {
            eprintln!("skipped the full-disk case: this system has no /dev/full");
        }
    }

    /// On a real small filesystem (a 64 KiB tmpfs): a result that does not
    /// fit, and any write once it is read-only, fail naming the path and
    /// the reason, and the earlier result stays whole with nothing beside it.
    #[test]
    fn full_and_read_only_filesystems_keep_the_earlier_result() {
        let dir = tempfile::tempdir().unwrap();
        let mount = |options: &str| {
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !mount("size=64k") {
            eprintln!("skipped: mounting a tmpfs is not allowed here (it needs root or CAP_SYS_ADMIN)");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(dir.path());
        let path = dir.path().join("result.json");
        let earlier = b"the earlier result";
        write_atomic(&path, earlier).unwrap();
        let only_the_result = || {
            assert_eq!(std::fs::read(&path).unwrap(), earlier);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file is left");
        };

        let e = write_atomic(&path, &vec![b'x'; 256 << 10]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("writing {}: No space left on device", path.display())), "{e}");
        only_the_result();

        assert!(mount("remount,ro"), "remounting read-only");
        let e = write_atomic(&path, b"new").unwrap_err().to_string();
        assert!(e.starts_with(&format!("writing {}: Read-only file system", path.display())), "{e}");
        let e = append_line(&path, "row").unwrap_err().to_string();
        assert!(e.starts_with(&format!("opening {}: Read-only file system", path.display())), "{e}");
        only_the_result();
    }
}
