//! The files a table's globs match now: each pattern walked from its
//! literal directory prefix (only as deep as the pattern can reach unless
//! it has `**`), symlinks followed (a directory seen twice by device and
//! inode is walked once, so a symlink loop ends), `exclude` applied.

use super::settings::FileSpec;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directory a pattern's walk starts from, and how many components
/// below it the pattern reaches (None: any depth, `**`).
pub fn walk_root(pattern: &str) -> (PathBuf, Option<usize>) {
    let meta = |c: &str| c.contains(['*', '?', '[', '{']);
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let lit = comps.iter().take_while(|c| !meta(c)).count();
    let root: PathBuf = std::iter::once("/")
        .chain(comps[..lit].iter().copied())
        .collect();
    let rest = &comps[lit..];
    if rest.contains(&"**") || rest.iter().any(|c| c.contains("**")) {
        (root, None)
    } else {
        (root, Some(rest.len()))
    }
}

/// Regular files (after symlinks) that match and are not excluded, sorted.
pub fn matching(spec: &FileSpec) -> Vec<PathBuf> {
    let mut out = HashSet::new();
    for p in &spec.table.paths {
        let (root, depth) = walk_root(p);
        if depth == Some(0) {
            if root.metadata().is_ok_and(|m| m.is_file()) && !spec.excluded(&root) {
                out.insert(root);
            }
            continue;
        }
        let mut seen = HashSet::new();
        walk(&root, depth, spec, &mut seen, &mut out);
    }
    let mut v: Vec<PathBuf> = out.into_iter().collect();
    v.sort();
    v
}

fn walk(
    dir: &Path,
    depth: Option<usize>,
    spec: &FileSpec,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut HashSet<PathBuf>,
) {
    let Ok(m) = dir.metadata() else { return };
    if !seen.insert((m.dev(), m.ino())) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // metadata() follows symlinks.
        let Ok(m) = path.metadata() else { continue };
        if m.is_dir() {
            if depth.is_none_or(|d| d > 1) {
                walk(&path, depth.map(|d| d - 1), spec, seen, out);
            }
        } else if m.is_file() && spec.paths.is_match(&path) && !spec.excluded(&path) {
            out.insert(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FilesTable;

    #[test]
    fn the_walk_starts_at_the_literal_prefix() {
        assert_eq!(walk_root("/var/log/*.log"), ("/var/log".into(), Some(1)));
        assert_eq!(
            walk_root("/var/log/app.log"),
            ("/var/log/app.log".into(), Some(0))
        );
        assert_eq!(walk_root("/srv/**/access.log"), ("/srv".into(), None));
        assert_eq!(walk_root("/srv/*/x/*.log"), ("/srv".into(), Some(3)));
    }

    #[test]
    fn globs_find_files_through_symlinks_and_exclude_applies() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        for f in ["x.log", "x.log.gz", "a/y.log", "a/b/z.log", "real/w.log"] {
            std::fs::write(root.join(f), b"1\n").unwrap();
        }
        std::os::unix::fs::symlink(root.join("real"), root.join("a/link")).unwrap();
        std::os::unix::fs::symlink(root, root.join("a/b/loop")).unwrap();
        let t: FilesTable = toml::from_str(&format!(
            "stream = \"s\"\npaths = [\"{0}/*.log*\", \"{0}/a/**/*.log\"]\nexclude = [\"*.gz\"]",
            root.display()
        ))
        .unwrap();
        let spec = t.compile("h").unwrap();
        let got: Vec<String> = matching(&spec)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert!(got.contains(&"x.log".to_string()), "{got:?}");
        assert!(got.contains(&"a/y.log".to_string()), "{got:?}");
        assert!(got.contains(&"a/b/z.log".to_string()), "{got:?}");
        // Through a symlink (a/link, or the loop back to the root, whichever
        // the walk met first: a directory is walked once).
        assert!(
            got.iter()
                .any(|g| g.starts_with("a/") && g.ends_with("/w.log")),
            "{got:?}"
        );
        assert!(!got.iter().any(|g| g.ends_with(".gz")), "{got:?}");
    }
}
