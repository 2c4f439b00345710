//! The file source: envelope rows in JSON/YAML files, or directories of them, checked
//! every poll interval. A file that fails to parse is reported and its last good rows
//! stay; a file that is removed takes its rows with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use steeple_plugin_api::EnvelopeRow;
use tokio_util::sync::CancellationToken;

use super::RowSink;
use super::parse::{Format, parse_document};

/// The source name rows from files are published under.
pub const SOURCE: &str = "files";
/// Envelope files larger than this are refused.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One file's last read content and the rows it gave.
#[derive(Debug)]
struct Loaded {
    content: Vec<u8>,
    rows: Vec<EnvelopeRow>,
}

/// The files under the configured paths and what each last gave.
#[derive(Debug, Default)]
pub struct FileSet {
    loaded: BTreeMap<PathBuf, Loaded>,
}

impl FileSet {
    /// Reads every envelope file under `paths`; returns whether any file's rows changed.
    pub fn reload(&mut self, paths: &[PathBuf]) -> bool {
        let files = list_files(paths);
        let before = self.loaded.len();
        self.loaded.retain(|path, _| files.contains(path));
        let mut changed = self.loaded.len() != before;
        for path in files {
            changed |= self.reload_file(&path);
        }
        changed
    }

    fn reload_file(&mut self, path: &Path) -> bool {
        let Some(format) = Format::of_path(path) else {
            return false;
        };
        let content = match read_bounded(path) {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read envelope file; keeping its last good rows");
                return false;
            }
        };
        if self.loaded.get(path).is_some_and(|l| l.content == content) {
            return false;
        }
        match parse_document(&content, format) {
            Ok(rows) => {
                tracing::info!(file = %path.display(), rows = rows.len(), "envelope file loaded");
                self.loaded
                    .insert(path.to_owned(), Loaded { content, rows });
                true
            }
            Err(problem) => {
                tracing::error!(file = %path.display(), %problem, "envelope file refused; keeping its last good rows");
                // Remember the bad content so it is reported once, not every poll.
                let rows = self.loaded.remove(path).map(|l| l.rows).unwrap_or_default();
                self.loaded
                    .insert(path.to_owned(), Loaded { content, rows });
                false
            }
        }
    }

    /// Every row, files in path order.
    pub fn rows(&self) -> Vec<EnvelopeRow> {
        self.loaded
            .values()
            .flat_map(|l| l.rows.iter().cloned())
            .collect()
    }
}

/// The envelope files at `paths`: each file as is, each directory's non-hidden entries
/// (not recursive; Kubernetes ConfigMap volumes keep their real files in hidden dirs).
fn list_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(path) else {
                tracing::error!(dir = %path.display(), "cannot list envelope directory");
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| !is_hidden(p) && p.is_file() && Format::of_path(p).is_some())
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        }
    }
    files
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    std::fs::read(path)
}

/// Publishes the rows under `paths` now and after every change, until `shutdown`.
pub async fn run(
    paths: Vec<PathBuf>,
    interval: Duration,
    sink: RowSink,
    shutdown: CancellationToken,
) {
    let mut files = FileSet::default();
    for path in paths.iter().filter(|p| !p.exists()) {
        tracing::warn!(path = %path.display(), "envelope path does not exist (yet)");
    }
    files.reload(&paths);
    sink.publish(SOURCE, files.rows());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let paths = paths.clone();
        let (returned, changed) = match tokio::task::spawn_blocking(move || {
            let changed = files.reload(&paths);
            (files, changed)
        })
        .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "envelope file reload failed; source stopped");
                return;
            }
        };
        files = returned;
        if changed {
            sink.publish(SOURCE, files.rows());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str) -> String {
        format!(
            r#"{{"logical_path":"{path}","provider":"local","key_id":"k","ciphertext_ref":"AQID"}}"#
        )
    }

    fn paths(files: &FileSet) -> Vec<String> {
        files.rows().into_iter().map(|r| r.logical_path).collect()
    }

    #[test]
    fn loads_directories_keeps_last_good_on_errors_and_drops_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), format!("[{}]", row("a"))).unwrap();
        std::fs::write(dir.path().join("b.yaml"), format!("- {}", row("b"))).unwrap();
        std::fs::write(dir.path().join(".hidden.json"), format!("[{}]", row("h"))).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut files = FileSet::default();
        let roots = [dir.path().to_owned()];
        assert!(files.reload(&roots));
        assert_eq!(paths(&files), ["a", "b"]);
        assert!(!files.reload(&roots), "unchanged files are no change");

        std::fs::write(dir.path().join("a.json"), "[{broken").unwrap();
        assert!(!files.reload(&roots));
        assert_eq!(paths(&files), ["a", "b"], "last good rows of a.json stay");

        std::fs::write(dir.path().join("a.json"), format!("[{}]", row("a2"))).unwrap();
        assert!(files.reload(&roots));
        assert_eq!(paths(&files), ["a2", "b"]);

        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        assert!(files.reload(&roots));
        assert_eq!(paths(&files), ["a2"]);
    }
}
