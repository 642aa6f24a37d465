//! Colyseus ids: `nanoid(9)` over `[A-Za-z0-9_-]` by default; user code may pick other ids of
//! the same alphabet, so only the alphabet and a length bound are enforced.

use std::fmt;

/// Longest id accepted. Colyseus ids are 9 characters; 64 leaves room for custom ids while
/// bounding cluster names and stats names in Envoy.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} characters long, the limit is {MAX_ID_LEN}")]
    TooLong(usize),
    #[error("id contains {0:?}, only [A-Za-z0-9_-] is allowed")]
    BadChar(char),
}

/// Checks `s` against the Colyseus id alphabet and [`MAX_ID_LEN`].
///
/// # Errors
/// The first rule `s` breaks.
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    match s.chars().find(|c| !is_id_char(*c)) {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A validated Colyseus `processId`: safe to embed in a cluster name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId(String);

impl ProcessId {
    /// Validates `s` as a process id.
    ///
    /// # Errors
    /// See [`check_id`].
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_id(s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nanoid_alphabet() {
        assert_eq!(check_id("aB3_-xYz9"), Ok(()));
        assert_eq!(check_id(&"a".repeat(MAX_ID_LEN)), Ok(()));
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(
            check_id(&"a".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong(MAX_ID_LEN + 1))
        );
        assert_eq!(check_id("ab.c"), Err(IdError::BadChar('.')));
        assert_eq!(check_id("ab%2F"), Err(IdError::BadChar('%')));
        assert_eq!(check_id("é"), Err(IdError::BadChar('é')));
        assert!(ProcessId::parse("a/b").is_err());
    }
}
