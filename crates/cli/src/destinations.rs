//! Where `enrich` will write (`-o`, `--summary-json`, `--report`, `--metrics-file`), checked
//! before anything is read or spent, so a run never spends its quota to find out at the end
//! that its summary cannot be kept, or overwrites the list it was reading.
//!
//! Two checks: no destination is one of the inputs (the same file, by device and inode, so
//! through links and other spellings of its path) or another destination; and each can be
//! written where it is: an existing device or FIFO is written in place (not opened here: a
//! FIFO's open waits for its reader), anything else needs its directory to take a new file,
//! which is tested the one way that answers for permissions, ACLs and read-only mounts alike:
//! a probe file is created there and removed (`vtbulk_store::not_writable`, the cache's own
//! probe).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::failure::Failure;

/// One place the run will write: the flag that names it, and its path.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    pub flag: &'static str,
    pub path: &'a Path,
}

/// Refuses (exit 2) a destination that is one of `inputs` or another destination, or that
/// cannot be written.
pub fn check(destinations: &[Destination<'_>], inputs: &[String]) -> Result<(), Failure> {
    let inputs: Vec<(&str, (u64, u64))> = inputs
        .iter()
        .filter(|i| i.as_str() != "-")
        .filter_map(|i| Some((i.as_str(), identity(Path::new(i))?)))
        .collect();
    for (n, d) in destinations.iter().enumerate() {
        let id = identity(d.path);
        if let Some(id) = id
            && let Some((input, _)) = inputs.iter().find(|(_, i)| *i == id)
        {
            return Err(Failure::Usage(format!(
                "{} {} is the input {input}: writing it would destroy the list being read; \
                 choose another path",
                d.flag,
                d.path.display()
            )));
        }
        for other in &destinations[..n] {
            let same = other.path == d.path || (id.is_some() && identity(other.path) == id);
            if same {
                return Err(Failure::Usage(format!(
                    "{} and {} both name {}: give each its own path",
                    other.flag,
                    d.flag,
                    d.path.display()
                )));
            }
        }
        writable(d)?;
    }
    Ok(())
}

/// The file's (device, inode), through links; `None` when it does not exist.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The destination can be written: a device or FIFO as it is, else a new file in its
/// directory (where its temporary or partial file goes before the rename).
fn writable(d: &Destination<'_>) -> Result<(), Failure> {
    let refuse = |why: String| {
        Failure::Usage(format!(
            "{} {}: {why} (checked before anything was read or looked up)",
            d.flag,
            d.path.display()
        ))
    };
    let target = match std::fs::metadata(d.path) {
        Ok(meta) if meta.is_dir() => return Err(refuse("is a directory".into())),
        Ok(meta) if !meta.is_file() => return Ok(()),
        Ok(_) => std::fs::canonicalize(d.path).unwrap_or_else(|_| d.path.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => d.path.to_owned(),
        Err(e) => return Err(refuse(e.to_string())),
    };
    let dir = directory_of(&target);
    if !dir.is_dir() {
        return Err(refuse(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    // The cache's probe: the file opened for writing, the directory given a new file.
    match vtbulk_store::not_writable(&target) {
        Some(why) => Err(refuse(format!("cannot be written: {why}"))),
        None => Ok(()),
    }
}

fn directory_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest<'a>(flag: &'static str, path: &'a Path) -> Destination<'a> {
        Destination { flag, path }
    }

    fn message(r: Result<(), Failure>) -> String {
        r.err()
            .and_then(|f| f.message().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn an_input_named_as_an_output_is_refused_through_a_link_or_another_spelling() {
        let dir = tempfile::tempdir().expect("dir");
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "x\n").expect("write");
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&list, &link).expect("symlink");
        let spelled = dir.path().join(".").join("list.txt");
        let inputs = vec!["-".to_owned(), list.display().to_string()];
        for (flag, path) in [
            ("-o", &list),
            ("--summary-json", &link),
            ("--report", &spelled),
        ] {
            let m = message(check(&[dest(flag, path)], &inputs));
            assert!(m.contains("is the input") && m.contains(flag), "{m}");
        }
        assert_eq!(std::fs::read_to_string(&list).expect("read"), "x\n");
        let other = dir.path().join("out.csv");
        assert!(check(&[dest("-o", &other)], &inputs).is_ok());
    }

    #[test]
    fn two_outputs_on_one_path_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("out.json");
        let m = message(check(
            &[dest("-o", &out), dest("--summary-json", &out)],
            &[],
        ));
        assert!(m.contains("both name"), "{m}");
    }

    #[test]
    fn a_missing_or_unwritable_directory_or_a_directory_is_refused_and_a_device_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("no/such/dir/summary.json");
        let m = message(check(&[dest("--summary-json", &missing)], &[]));
        assert!(
            m.contains("does not exist") && m.contains("--summary-json"),
            "{m}"
        );
        let m = message(check(&[dest("--report", dir.path())], &[]));
        assert!(m.contains("is a directory"), "{m}");
        assert!(check(&[dest("-o", Path::new("/dev/null"))], &[]).is_ok());
        // A directory the user cannot write (root writes anywhere: nothing to check then).
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        let probe = tempfile::tempfile_in(&locked);
        let result = check(&[dest("--metrics-file", &locked.join("m.prom"))], &[]);
        assert_eq!(result.is_err(), probe.is_err());
        assert!(std::fs::read_dir(&locked).expect("list").next().is_none());
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
}
