//! One error type for the whole engine: every failure a user can cause (bad file,
//! bad argument, no adapter) becomes a readable message instead of a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SiftError {
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    /// An I/O failure: what Sift was doing, the path, and the system's reason.
    /// (The reason is part of the message, not a separate cause: printed
    /// once.)
    #[error("{doing} {path}: {}", os_reason(reason))]
    Io {
        doing: &'static str,
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}: invalid model file: {message}")]
    BadFile { path: PathBuf, message: String },
    /// A thresholds, mask or data file that cannot be used.
    #[error("{path}: {message}")]
    BadDataFile { path: PathBuf, message: String },
    #[error("unsupported tensor type {ty} in tensor {tensor}")]
    UnsupportedTensorType { ty: String, tensor: String },
    #[error("unsupported model architecture '{0}' (supported: llama)")]
    UnsupportedArchitecture(String),
    #[error("model is missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("fetching a packaged model: {0}")]
    DefaultModel(String),
}

pub type Result<T> = std::result::Result<T, SiftError>;

impl SiftError {
    pub fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SiftError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn bad_data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SiftError::BadDataFile {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error reading `path` (most file access is reading).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::io_doing("reading", path, source)
    }

    /// An error while `doing` ("writing", "creating") something to `path`.
    pub fn io_doing(doing: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SiftError::Io { doing, path: path.into(), reason: source }
    }
}

/// The system's reason without its " (os error N)" suffix: the reason is
/// what a user reads.
fn os_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
