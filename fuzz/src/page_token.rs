//! Page tokens and cursors: audit's page token, the kit's signed cursors
//! (records and consent), the (time, id) position records' search and
//! consent's lists put in them, and page sizes.
//!
//! The first byte picks what the rest is:
//! - 0: an audit page token;
//! - 1: a cursor, opened for a fixed query;
//! - 2: a position: issued as a cursor, which then opens to it, and edits
//!   to that cursor that do not;
//! - 3: a page size (four bytes, little-endian).

use sharedcare_audit::domain::{PageSize, PageToken};
use sharedcare_kit::paging::{CursorKey, page_size, read_time_id_position, time_id_position};

use crate::input::{Input, mutate};

const KEY: [u8; 32] = *b"sharedcare fuzz cursor key, test";
const QUERY: &[u8] = b"search\0fuzz-patient-1\0code=1234";

/// A cursor for `position`, as the target's mode 1 opens it.
pub fn cursor(position: &[u8]) -> String {
    CursorKey::new(KEY).issue(QUERY, position)
}

pub fn page_token(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 4;
    let key = CursorKey::new(KEY);
    match mode {
        0 => {
            let Ok(text) = std::str::from_utf8(input.rest()) else {
                return;
            };
            match PageToken::parse("page_token", text) {
                Ok(None) => assert!(text.is_empty()),
                Ok(Some(token)) => {
                    // Only the one encoding of each token reads.
                    assert_eq!(token.encode(), text);
                    assert!(token.after() > 0);
                }
                Err(e) => assert_eq!(e.field.as_deref(), Some("page_token")),
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(input.rest()) else {
                return;
            };
            match key.open("page_token", text, QUERY) {
                Ok(None) => assert!(text.is_empty()),
                Ok(Some(position)) => {
                    // Only a cursor issued for this query opens.
                    assert_eq!(key.issue(QUERY, &position), text);
                    position_round_trips(&position);
                }
                Err(e) => assert_eq!(e.field.as_deref(), Some("page_token")),
            }
        }
        2 => {
            // Any position up to 700 bytes (what a cursor's length bound allows).
            let length = usize::from(input.u16() % 700);
            let position = input.take(length).to_vec();
            position_round_trips(&position);
            let cursor = key.issue(QUERY, &position);
            let opened = key.open("page_token", &cursor, QUERY);
            assert_eq!(opened.ok(), Some(Some(position)));
            assert!(key.open("page_token", &cursor, b"another query").is_err());
            let edited = mutate(cursor.as_bytes(), &mut input);
            if let Ok(edited) = std::str::from_utf8(&edited)
                && edited != cursor
                && !edited.is_empty()
            {
                assert!(
                    key.open("page_token", edited, QUERY).is_err(),
                    "an edited cursor opened: {edited}"
                );
            }
        }
        _ => {
            let mut bytes = [0u8; 4];
            let got = input.take(4);
            bytes[..got.len()].copy_from_slice(got);
            let value = i32::from_le_bytes(bytes);
            match page_size("page_size", value, 20, 100) {
                Ok(n) => assert!(n == 20 || (value > 0 && n == value as usize && n <= 100)),
                Err(e) => assert_eq!(e.field.as_deref(), Some("page_size")),
            }
            if let Ok(size) = PageSize::parse("page_size", value) {
                assert!((1..=500).contains(&size.get()));
            }
        }
    }
}

/// A position that reads as a (time, id) writes back to the same bytes.
fn position_round_trips(position: &[u8]) {
    if let Some((micros, id)) = read_time_id_position(position) {
        assert_eq!(time_id_position(micros, &id), position);
    }
}
