//! The PDF directory: writing a finished PDF so that no reader ever sees half of it, and the
//! sweeper that removes expired PDFs and orphaned temporary files.
//!
//! A PDF is written to `.<task_id>.<host>.<pid>.tmp`, flushed to disk, then renamed to
//! `<task_id>.pdf` and the directory flushed: after a crash there is either the whole file
//! or none. A temporary file whose process is gone (same host, pid not running) or that is
//! older than the hard time limit is an orphan.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

/// The final path of a job's PDF.
pub fn pdf_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.pdf"))
}

/// This machine's host name, to tell our temporary files from another pod's on a shared
/// volume.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['.', '/'], "-"))
        .unwrap_or_else(|_| "host".to_string())
}

/// Writes `pdf` as the job's file: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, task_id: &str, pdf: &[u8]) -> std::io::Result<u64> {
    let tmp = dir.join(format!(
        ".{task_id}.{}.{}.tmp",
        host_name(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(pdf)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, pdf_path(dir, task_id))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| pdf.len() as u64)
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub orphans: usize,
}

/// Removes PDFs older than `ttl` and orphaned temporary files.
pub fn sweep(dir: &Path, ttl: Duration, hard_limit: Duration) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return swept;
    };
    let host = host_name();
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        let remove = if name.ends_with(".pdf") {
            age > ttl
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            is_orphan(&name, &host, age, hard_limit)
        } else {
            false
        };
        if !remove {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) if name.ends_with(".pdf") => swept.expired += 1,
            Ok(()) => swept.orphans += 1,
            Err(e) => warn!(file = %name, error = %e, "sweeper could not remove a file"),
        }
    }
    if swept != Swept::default() {
        debug!(
            expired = swept.expired,
            orphans = swept.orphans,
            "pdf directory swept"
        );
    }
    swept
}

/// `.<task_id>.<host>.<pid>.tmp`: an orphan when its writer is gone or it is too old for
/// any render still running.
fn is_orphan(name: &str, host: &str, age: Duration, hard_limit: Duration) -> bool {
    if age > hard_limit + Duration::from_secs(60) {
        return true;
    }
    let parts: Vec<&str> = name.trim_end_matches(".tmp").rsplitn(3, '.').collect();
    let [pid, file_host, _] = parts.as_slice() else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    *file_host == host && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_is_whole_and_leaves_no_temporary() {
        let dir = tempfile_dir();
        let n = write_atomically(&dir, "abc", b"%PDF-1.7 hello").unwrap();
        assert_eq!(n, 14);
        assert_eq!(fs::read(pdf_path(&dir, "abc")).unwrap(), b"%PDF-1.7 hello");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn temporaries_of_dead_processes_are_orphans() {
        let host = host_name();
        let hour = Duration::from_secs(3600);
        // 999999999 is above any pid_max, so no process has it.
        assert!(is_orphan(
            &format!(".t.{host}.999999999.tmp"),
            &host,
            Duration::ZERO,
            hour
        ));
        let me = std::process::id();
        assert!(!is_orphan(
            &format!(".t.{host}.{me}.tmp"),
            &host,
            Duration::ZERO,
            hour
        ));
        assert!(!is_orphan(
            ".t.other-host.999999999.tmp",
            &host,
            Duration::ZERO,
            hour
        ));
        assert!(is_orphan(".t.other-host.1.tmp", &host, hour * 2, hour));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sapl-worker-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
