//! identity's demographic parsers: the NHS number, the postcode and the
//! (partial) date of birth. Whatever parses writes back to text that parses
//! to the same value; whatever is refused is refused naming the field.

use sharedcare_identity::domain::{
    NhsNumber,
    matching::{PartialDate, Postcode, PostcodeAgreement},
};
use sharedcare_kit::Error;

fn refused_naming(field: &str, e: &Error) {
    assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
}

pub fn nhs_number(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let number = match NhsNumber::parse("nhs_number", text) {
        Ok(number) => number,
        Err(e) => return refused_naming("nhs_number", &e),
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
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let postcode = match Postcode::parse("postcode", text) {
        Ok(postcode) => postcode,
        Err(e) => return refused_naming("postcode", &e),
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
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let date = match PartialDate::parse("birth_date", text) {
        Ok(date) => date,
        Err(e) => return refused_naming("birth_date", &e),
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
