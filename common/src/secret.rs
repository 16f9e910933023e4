//! Secrets: passwords that must never be printed. A [`Secret`] redacts itself in `Debug` and
//! `Display`, and is not `Serialize`, so it cannot leak through logs, errors, `status` output or
//! config dumps by accident. Read the value only where it is handed to a client library.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret's value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file, dropping one trailing newline.
    pub fn from_file(path: &Path) -> Result<Secret, std::io::Error> {
        let s = std::fs::read_to_string(path)?;
        Ok(Secret(s.strip_suffix('\n').unwrap_or(&s).to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A secret given inline, or as a file to read it from. Config files should use `*_file`, or
/// leave both unset and pass the secret by environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRef {
    pub value: Option<Secret>,
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// Resolves the secret: the inline value, else the file's content, else `None`.
    /// `what` names the setting of the file, for the error.
    pub fn resolve(&self, what: &str) -> Result<Option<Secret>, UnreadableSecret> {
        if let Some(v) = &self.value {
            return Ok(Some(v.clone()));
        }
        match &self.file {
            Some(f) => Secret::from_file(f)
                .map(Some)
                .map_err(|source| UnreadableSecret {
                    setting: what.to_owned(),
                    path: f.clone(),
                    source,
                }),
            None => Ok(None),
        }
    }
}

/// A secret's file that cannot be read: the setting that names it, the file and why.
#[derive(Debug, thiserror::Error)]
#[error("setting {setting}: cannot read {}: {source}", path.display())]
pub struct UnreadableSecret {
    pub setting: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_files_without_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("continuum-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&f).unwrap().expose(), "s3cret");
        let r = SecretRef {
            value: None,
            file: Some(f),
        };
        assert_eq!(r.resolve("x").unwrap().unwrap().expose(), "s3cret");
        let missing = SecretRef {
            value: None,
            file: Some(dir.join("nope")),
        };
        assert!(missing
            .resolve("database.password_file")
            .unwrap_err()
            .to_string()
            .contains("database.password_file"));
    }
}
