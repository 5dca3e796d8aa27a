//! identity's demographic parsers: the NHS number, the postcode and the
//! (partial) date of birth. Whatever parses writes back to text that parses
//! to the same value; whatever is refused is refused naming the field.

use sharedcare_identity::domain::{
    NhsNumber,
    matching::{PartialDate, Postcode, PostcodeAgreement},
};
use sharedcare_kit::Error;

/// The input as text, parsed with `parse`; `None` when it is not text or
/// is refused, and then refused naming `field`.
fn parsed<'a, T>(
    data: &'a [u8],
    field: &str,
    parse: impl Fn(&str, &str) -> Result<T, Error>,
) -> Option<(&'a str, T)> {
    let text = std::str::from_utf8(data).ok()?;
    match parse(field, text) {
        Ok(value) => Some((text, value)),
        Err(e) => {
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
            None
        }
    }
}

pub fn nhs_number(data: &[u8]) {
    let Some((text, number)) = parsed(data, "nhs_number", NhsNumber::parse) else {
        return;
    };
    let digits = number.as_str();
    assert_eq!(digits.len(), 10);
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(text.replace(' ', ""), digits);
    for written in [digits.to_owned(), number.to_string()] {
        assert_eq!(
            NhsNumber::parse("nhs_number", &written).ok().as_ref(),
            Some(&number)
        );
    }
}

pub fn postcode(data: &[u8]) {
    let Some((_, postcode)) = parsed(data, "postcode", Postcode::parse) else {
        return;
    };
    let written = postcode.to_string();
    assert_eq!(
        Postcode::parse("postcode", &written).ok().as_ref(),
        Some(&postcode)
    );
    assert_eq!(
        written,
        format!("{} {}", postcode.outward(), postcode.inward())
    );
    assert!(postcode.sector().starts_with(postcode.district()));
    assert_eq!(postcode.compare(&postcode), PostcodeAgreement::Full);
}

pub fn birth_date(data: &[u8]) {
    let Some((_, date)) = parsed(data, "birth_date", PartialDate::parse) else {
        return;
    };
    let key = date.as_key();
    assert_eq!(
        PartialDate::parse("birth_date", &key).ok(),
        Some(date),
        "{key}"
    );
    assert_eq!(date.is_full(), date.swap_invariant_key().is_some());
    // Comparing with itself never panics and agrees as far as given.
    let _ = date.compare(&date);
}
