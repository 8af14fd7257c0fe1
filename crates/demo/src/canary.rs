//! Canaries: one random string per run, planted in every seeded user's notes and photos, then
//! searched for in every file under the data directory after the run. Encryption at rest means
//! it is found nowhere: the report's `plaintext_hits` must be 0.

use std::io::Read;
use std::path::Path;

/// Bytes read at a time while scanning a file.
const READ: usize = 1 << 20;

/// A fresh canary: unguessable, so no file can hold it by chance.
pub fn fresh() -> String {
    format!("domicile-canary-{:032x}", rand::random::<u128>())
}

/// How many times `canary` occurs in the files under `dir` (every file, read whole, in chunks
/// that overlap by the canary's length so no occurrence is missed at a boundary).
pub fn plaintext_hits(dir: &Path, canary: &str) -> std::io::Result<u64> {
    let finder = memchr::memmem::Finder::new(canary.as_bytes());
    let keep = canary.len().saturating_sub(1);
    let mut hits = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut buf = Vec::with_capacity(READ + keep);
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let mut file = match std::fs::File::open(entry.path()) {
                Ok(f) => f,
                // Gone since listed (a temporary file): nothing left to hold a canary.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            buf.clear();
            loop {
                let start = buf.len();
                buf.resize(start + READ, 0);
                let n = file.read(&mut buf[start..])?;
                buf.truncate(start + n);
                if n == 0 {
                    break;
                }
                hits += finder.find_iter(&buf).count() as u64;
                // Carry the tail that could begin an occurrence completed by the next read.
                let tail = buf.len().saturating_sub(keep);
                buf.drain(..tail);
            }
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occurrences_are_counted_in_every_file_and_across_read_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let canary = fresh();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one"), format!("x{canary}y{canary}")).unwrap();
        // One occurrence straddling the first read's end.
        let mut big = vec![b'.'; READ - 5];
        big.extend_from_slice(canary.as_bytes());
        big.extend_from_slice(&[b'.'; 100]);
        std::fs::write(dir.path().join("big"), big).unwrap();
        std::fs::write(dir.path().join("none"), "nothing here").unwrap();
        assert_eq!(plaintext_hits(dir.path(), &canary).unwrap(), 3);
        assert_eq!(plaintext_hits(dir.path(), &fresh()).unwrap(), 0);
    }
}
