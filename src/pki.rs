//! Development PKI.

use std::path::{Path, PathBuf};

/// Why the PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} exists; pass --force to overwrite")]
    Exists { path: PathBuf },
}

/// Writes the development PKI.
pub fn init(dir: &Path, _force: bool) -> Result<Vec<PathBuf>, PkiError> {
    Err(PkiError::Exists {
        path: dir.to_owned(),
    })
}
