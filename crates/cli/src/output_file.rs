//! Where `enrich` writes: stdout, or `-o FILE`, written beside as `FILE.partial` and renamed
//! over FILE only when the run has written everything (removed when it fails), so a reader of
//! FILE never sees half an output and a failed run never leaves one.
//!
//! A FILE that exists and is not a regular file (a device such as `/dev/null`, a FIFO) is
//! written in place: renaming a finished `.partial` over `/dev/null` would replace the device
//! with a file. A symlink's target is written (the link survives the rename).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use vtbulk_output::direct::DirectFile;

use crate::failure::Failure;

/// An output being written, and how it is completed.
#[derive(Debug)]
pub struct OutputFile {
    /// (partial, final) for a regular file; `None` for stdout or a device.
    renamed: Option<(PathBuf, PathBuf)>,
}

impl OutputFile {
    /// Opens where `path` says (stdout when `None`), buffered.
    pub fn create(path: Option<&Path>) -> Result<(Box<dyn Write + Send>, OutputFile), Failure> {
        let Some(path) = path else {
            let out = io::BufWriter::with_capacity(64 * 1024, io::stdout());
            return Ok((Box::new(out), OutputFile { renamed: None }));
        };
        let Some(target) = regular_target(path) else {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Failure::Usage(format!("failed to open {}: {e}", path.display())))?;
            let out = io::BufWriter::with_capacity(256 * 1024, file);
            return Ok((Box::new(out), OutputFile { renamed: None }));
        };
        // A regular file is written past the page cache where the system allows it
        // (`vtbulk_output::direct`): an output of gigabytes costs a core's time else.
        let partial = partial_path(&target);
        let file = DirectFile::create(&partial)
            .map_err(|e| Failure::Usage(format!("failed to create {}: {e}", partial.display())))?;
        let renamed = Some((partial, target));
        Ok((Box::new(file), OutputFile { renamed }))
    }

    /// Everything was written: the partial file becomes the output.
    pub fn commit(self) -> Result<(), Failure> {
        let Some((partial, path)) = &self.renamed else {
            return Ok(());
        };
        std::fs::rename(partial, path).map_err(|e| {
            Failure::Usage(format!(
                "failed to rename {} to {}: {e}",
                partial.display(),
                path.display()
            ))
        })
    }

    /// The run failed: nothing complete was written, so no half file is left behind.
    pub fn discard(self) {
        if let Some((partial, _)) = &self.renamed {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Where an output file really goes: the file itself, or the file a symlink points to (so the
/// link survives the rename). `None` when `path` exists and is not a regular file.
fn regular_target(path: &Path) -> Option<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => None,
        Ok(_) => Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())),
        Err(_) => Some(path.to_owned()),
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_sit_next_to_the_output_and_become_it_or_go() {
        assert_eq!(
            partial_path(Path::new("out/x.csv")),
            PathBuf::from("out/x.csv.partial")
        );
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.csv");
        let (mut out, file) = OutputFile::create(Some(&path)).expect("create");
        out.write_all(b"a\n")
            .and_then(|()| out.flush())
            .expect("write");
        assert!(dir.path().join("x.csv.partial").exists() && !path.exists());
        file.commit().expect("commit");
        assert_eq!(std::fs::read(&path).expect("read"), b"a\n");
        let (_, file) = OutputFile::create(Some(&path)).expect("again");
        file.discard();
        assert!(!dir.path().join("x.csv.partial").exists());
        assert_eq!(
            std::fs::read(&path).expect("kept"),
            b"a\n",
            "the last complete output"
        );
        // A device is written in place, never renamed over.
        let (_, file) = OutputFile::create(Some(Path::new("/dev/null"))).expect("null");
        assert!(file.renamed.is_none());
    }
}
