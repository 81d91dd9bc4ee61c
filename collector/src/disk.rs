//! Free-space watch: below the reserve the collector stops acknowledging (agents keep
//! spooling), and it warns before that happens.

use std::path::Path;

/// Free bytes available to an unprivileged writer on the file system holding `path`.
#[allow(unsafe_code)]
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Disk state derived from free space and the configured reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskState {
    Ok,
    /// Less than twice the reserve is free: warn.
    Low,
    /// Less than the reserve is free: stop storing.
    Full,
}

pub fn classify(free: u64, reserve: u64) -> DiskState {
    if free < reserve {
        DiskState::Full
    } else if free < reserve.saturating_mul(2) {
        DiskState::Low
    } else {
        DiskState::Ok
    }
}
