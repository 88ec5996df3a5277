//! Loading policy files: paths in, [`Policies`] out.
//!
//! In: files and directories (every `*.toml` inside, sorted by name). Out: one
//! [`PolicyFile`] per application type. Guarantee: every error names the file, the
//! line and the field at fault: unknown fields, wrong types and out-of-range values
//! alike, and an application type defined by two files.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::file::PolicyFile;

/// Why policy files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy path {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {field}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, field: String, message: String },
    #[error("{}:{line}: app_type: {app_type:?} is already defined in {}", path.display(), first.display())]
    DuplicateAppType { path: PathBuf, line: usize, app_type: String, first: PathBuf },
    #[error("no *.toml policy files in {}", path.display())]
    Empty { path: PathBuf },
}

/// The policies of every application type that has a file; the others get the tiers only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies {
    files: BTreeMap<String, (PathBuf, PolicyFile)>,
}

impl Policies {
    /// Loads every file given, and every `*.toml` in every directory given.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PolicyError> {
        let mut files = BTreeMap::new();
        for path in paths {
            for file in expand(path)? {
                let text = std::fs::read_to_string(&file)
                    .map_err(|source| PolicyError::Read { path: file.clone(), source })?;
                let policy = parse(&file, &text)?;
                if let Some((first, _)) = files.get(&policy.app_type) {
                    return Err(PolicyError::DuplicateAppType {
                        line: locate(&text, &["app_type"]),
                        path: file,
                        app_type: policy.app_type,
                        first: PathBuf::clone(first),
                    });
                }
                files.insert(policy.app_type.clone(), (file, policy));
            }
        }
        Ok(Self { files })
    }

    /// The policies shipped with Augur: `$AUGUR_POLICIES` (a directory or file), else
    /// `policies/` of the source tree the crate was built from.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::load(&[shipped_dir()])
    }

    /// Policies from values, for tests and embedding (no file, no line numbers).
    pub fn from_files(files: impl IntoIterator<Item = PolicyFile>) -> Self {
        let files = files.into_iter().map(|p| (p.app_type.clone(), (PathBuf::new(), p))).collect();
        Self { files }
    }

    /// The policy of an application type, if a file defines it.
    pub fn get(&self, app_type: &str) -> Option<&PolicyFile> {
        self.files.get(app_type).map(|(_, p)| p)
    }

    /// The application types with a file, sorted.
    pub fn app_types(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The file that defined an application type's policy.
    pub fn source(&self, app_type: &str) -> Option<&Path> {
        self.files.get(app_type).map(|(p, _)| p.as_path())
    }

    /// The policy of an application type, or the tiers-only default.
    pub(crate) fn policy_or_default(&self, app_type: &str) -> std::borrow::Cow<'_, PolicyFile> {
        match self.get(app_type) {
            Some(p) => std::borrow::Cow::Borrowed(p),
            None => std::borrow::Cow::Owned(PolicyFile::tiers_only(app_type)),
        }
    }
}

/// Where the shipped policies are: `$AUGUR_POLICIES`, else `policies/` of the source
/// tree (as [`crate::detect::lstm::shipped_dir`] finds the models).
pub fn shipped_dir() -> PathBuf {
    std::env::var_os("AUGUR_POLICIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let read = |source| PolicyError::Read { path: path.to_owned(), source };
    if !path.is_dir() {
        // A missing file fails here with the OS's reason.
        std::fs::metadata(path).map_err(read)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read)? {
        let p = entry.map_err(read)?.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(PolicyError::Empty { path: path.to_owned() });
    }
    // Sorted, so which of two duplicates is reported as first does not depend on the
    // order the file system lists them in.
    files.sort();
    Ok(files)
}

/// Parses and validates one file's text.
pub fn parse(path: &Path, text: &str) -> Result<PolicyFile, PolicyError> {
    let invalid = |line, field: String, message: String| PolicyError::Invalid {
        path: path.to_owned(),
        line,
        field: if field.is_empty() { "(document)".to_owned() } else { field },
        message,
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| invalid(e.span().map_or(1, |s| line_of(text, s.start)), String::new(), e.message().to_owned()))?;
    let policy: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        let line = inner.span().map_or_else(|| locate(text, &split(&field)), |s| line_of(text, s.start));
        invalid(line, field, inner.message().to_owned())
    })?;
    if let Some((field, message)) = policy.validate().into_iter().next() {
        return Err(invalid(locate(text, &split(&field)), field, message));
    }
    Ok(policy)
}

fn split(field: &str) -> Vec<&str> {
    field.split('.').filter(|s| !s.is_empty()).collect()
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of a field, by its path of keys: the key's own line if the field is
/// written, else the line of the nearest table on the path that is, else 1.
fn locate(text: &str, path: &[&str]) -> usize {
    let Ok(root) = DeTable::parse(text) else { return 1 };
    let mut span: Range<usize> = 0..0;
    let mut table: &DeTable<'_> = root.get_ref();
    for key in path {
        let Some((k, v)) = table.get_key_value(*key) else { break };
        span = key_span(k, v);
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    line_of(text, span.start)
}

fn key_span(key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>) -> Range<usize> {
    // Tables made implicitly by a dotted header may carry an empty key span.
    if key.span().is_empty() {
        value.span()
    } else {
        key.span()
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
