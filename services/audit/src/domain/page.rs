//! Paging through a patient's part of the log: a page size and an opaque
//! token that says where the previous page ended.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sharedcare_kit::Error;

/// Entries per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// Most entries per page. A larger request is refused rather than clamped,
/// as the API documents `1..500`: a caller asking for more learns so.
pub const MAX_PAGE_SIZE: u64 = 500;

/// How many entries a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u64);

impl PageSize {
    /// 0 means the default (100); 1..=500 as asked; anything else is refused.
    pub fn parse(field: &str, value: i32) -> Result<Self, Error> {
        sharedcare_kit::paging::page_size(
            field,
            value,
            DEFAULT_PAGE_SIZE as usize,
            MAX_PAGE_SIZE as usize,
        )
        .map(|n| PageSize(n as u64))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Token format version, so the encoding can change without old tokens
/// being misread.
const TOKEN_V1: u8 = 1;

/// Where the next page starts: after the entry with this sequence number.
/// On the wire, base64url (no padding) of a version byte and the sequence
/// as u64 big-endian: opaque to callers, who must not build their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    after: u64,
}

impl PageToken {
    /// The token for the page after the entry numbered `sequence`.
    pub fn after_sequence(sequence: u64) -> Self {
        PageToken { after: sequence }
    }

    /// The last sequence number the previous page held.
    pub fn after(self) -> u64 {
        self.after
    }

    /// Reads a token; the empty string is the first page (`None`).
    pub fn parse(field: &str, value: &str) -> Result<Option<Self>, Error> {
        if value.is_empty() {
            return Ok(None);
        }
        let malformed = || Error::invalid(field, "is not a token this service issued");
        let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| malformed())?;
        match bytes.as_slice() {
            [TOKEN_V1, rest @ ..] => {
                let after = u64::from_be_bytes(<[u8; 8]>::try_from(rest).map_err(|_| malformed())?);
                if after == 0 {
                    return Err(malformed());
                }
                Ok(Some(PageToken { after }))
            }
            _ => Err(malformed()),
        }
    }

    pub fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(9);
        bytes.push(TOKEN_V1);
        bytes.extend_from_slice(&self.after.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_bounds() {
        assert_eq!(PageSize::parse("page_size", 0).expect("ok").get(), 100);
        assert_eq!(PageSize::parse("page_size", 1).expect("ok").get(), 1);
        assert_eq!(PageSize::parse("page_size", 500).expect("ok").get(), 500);
        for bad in [501, -1, i32::MAX, i32::MIN] {
            let err = PageSize::parse("page_size", bad).expect_err("refused");
            assert_eq!(err.field.as_deref(), Some("page_size"));
        }
    }

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        for sequence in [1, 99, u64::MAX] {
            let token = PageToken::after_sequence(sequence).encode();
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
            let read = PageToken::parse("page_token", &token)
                .expect("ok")
                .expect("some");
            assert_eq!(read.after(), sequence);
        }
    }

    #[test]
    fn empty_token_is_the_first_page() {
        assert_eq!(PageToken::parse("page_token", "").expect("ok"), None);
    }

    #[test]
    fn malformed_tokens_name_the_field() {
        let zero = URL_SAFE_NO_PAD.encode([1u8, 0, 0, 0, 0, 0, 0, 0, 0]);
        let other_version = URL_SAFE_NO_PAD.encode([2u8, 0, 0, 0, 0, 0, 0, 0, 5]);
        let short = URL_SAFE_NO_PAD.encode([1u8, 0, 5]);
        for bad in [
            "not base64!",
            "42",
            zero.as_str(),
            other_version.as_str(),
            short.as_str(),
        ] {
            let err = PageToken::parse("page_token", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("page_token"), "{bad}");
        }
    }
}
