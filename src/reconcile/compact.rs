//! Compact forms of what the operator keeps per object for as long as it runs (caches and
//! records, one entry per managed Secret): a uid or token id in 16 bytes rather than a
//! 36-character string on the heap.

use std::fmt;

/// A Kubernetes uid or a token id: the 16 bytes of a UUID when it is one in its canonical
/// (lower-case, hyphenated) form — as the API server and tokenmint write them — else the text.
/// Equal to a `&str` exactly when their texts are equal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Id(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Uuid([u8; 16]),
    Text(Box<str>),
}

/// The UUID `text` is in canonical form.
fn canonical_uuid(text: &str) -> Option<uuid::Uuid> {
    let uuid = uuid::Uuid::try_parse(text).ok()?;
    let mut buffer = uuid::Uuid::encode_buffer();
    (uuid.hyphenated().encode_lower(&mut buffer) == text).then_some(uuid)
}

impl Id {
    pub fn new(text: &str) -> Self {
        Id(match canonical_uuid(text) {
            Some(uuid) => Repr::Uuid(uuid.into_bytes()),
            None => Repr::Text(text.into()),
        })
    }

    pub fn is(&self, text: &str) -> bool {
        match &self.0 {
            Repr::Text(own) => **own == *text,
            Repr::Uuid(bytes) => canonical_uuid(text).is_some_and(|uuid| uuid.as_bytes() == bytes),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().fmt(f),
            Repr::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl From<&str> for Id {
    fn from(text: &str) -> Self {
        Id::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_text_exactly() {
        let canonical = "0b5c8c54-7f3c-4f8e-9d6a-6f1d2e3c4b5a";
        let id = Id::new(canonical);
        assert!(matches!(id.0, Repr::Uuid(_)));
        assert_eq!(id.to_string(), canonical);
        assert!(id.is(canonical));
        // Another spelling of the same UUID is another text, and another id.
        let upper = canonical.to_uppercase();
        assert!(!id.is(&upper));
        let other = Id::new(&upper);
        assert!(matches!(other.0, Repr::Text(_)) && other.to_string() == upper);
        assert_ne!(id, other);
        for text in ["uid-grant-1", "", "0b5c8c547f3c4f8e9d6a6f1d2e3c4b5a"] {
            let id = Id::new(text);
            assert!(matches!(id.0, Repr::Text(_)) && id.is(text) && id.to_string() == text);
        }
        assert!(std::mem::size_of::<Option<Id>>() <= 24);
    }
}
