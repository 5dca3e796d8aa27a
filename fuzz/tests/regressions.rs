//! Every input the fuzzers found failing, named for what was wrong: each
//! runs through its target (whose checks are what failed) and stays in
//! the target's corpus as `regression-*`.

use sharedcare_fuzz::birth_date;

/// chrono's `%Y` read "+12345" as a year, so a full date of birth took a
/// year the other forms refuse, and its key ("12345-01-01") did not read
/// back. A year is four digits in every form now.
#[test]
fn birth_date_with_a_signed_five_digit_year() {
    birth_date(b"+12345-01-01");
    let refused =
        sharedcare_identity::domain::matching::PartialDate::parse("birth_date", "+12345-01-01");
    assert_eq!(
        refused.expect_err("a five-digit year").field.as_deref(),
        Some("birth_date")
    );
}
