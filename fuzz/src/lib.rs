//! Helpers shared by the fuzz targets and the seed maker.

use std::path::PathBuf;

/// Splits an input into three files: each of the first two is preceded by
/// its length as 4 little-endian bytes (clamped to what is left), the third
/// is the rest. The inverse of [`join3`].
pub fn split3(data: &[u8]) -> [&[u8]; 3] {
    let mut rest = data;
    let mut take = || -> &[u8] {
        let n = rest.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let body = &rest[rest.len().min(4)..];
        let (part, tail) = body.split_at(n.min(body.len()));
        rest = tail;
        part
    };
    let (a, b) = (take(), take());
    [a, b, rest]
}

/// The input [`split3`] cuts into `parts`.
pub fn join3(parts: [&[u8]; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &parts[..2] {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(parts[2]);
    out
}

/// A directory of this process's own under the system's temporary one
/// (a tmpfs where there is one), made once and reused for every input.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("sift-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory can be made");
    dir
}
