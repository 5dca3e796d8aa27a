//! NHS numbers from the test range (999 000 0000 – 999 999 9999) with a
//! valid Modulus 11 check digit: never a real patient's.

use rand::Rng;

/// A random valid test-range NHS number, spaced "999 123 4567".
pub fn random_test_number() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let mut digits = [9u8; 9];
        for digit in digits.iter_mut().skip(3) {
            *digit = rng.gen_range(0..10);
        }
        let Some(check) = check_digit(&digits) else {
            continue;
        };
        if digits.iter().all(|d| *d == check) {
            continue; // one repeated digit is refused
        }
        let all: String = digits
            .iter()
            .chain(std::iter::once(&check))
            .map(|d| char::from(b'0' + d))
            .collect();
        return format!("{} {} {}", &all[..3], &all[3..6], &all[6..]);
    }
}

/// A date of birth (1940–2009) that follows from a test number: a made-up
/// person registered under a fresh random number also gets their own
/// birthday, so identity does not take them for someone registered earlier
/// with the same name under another number (a possible mistyped number,
/// which it holds for a person to look at).
pub fn birth_date_for(number: &str) -> String {
    let n: u64 = number
        .chars()
        .filter_map(|c| c.to_digit(10))
        .fold(0, |n, d| n * 10 + u64::from(d));
    // Days 1-28 exist in every month.
    format!(
        "{}-{:02}-{:02}",
        1940 + n % 70,
        1 + (n / 70) % 12,
        1 + (n / 840) % 28
    )
}

/// The Modulus 11 check digit of the first nine digits; `None` when the
/// result is 10 (no valid number starts with these nine digits).
pub fn check_digit(first_nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10u32).rev())
        .map(|(digit, weight)| u32::from(*digit) * weight)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        check => u8::try_from(check).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_follow_from_numbers_and_are_valid() {
        assert_eq!(birth_date_for("999 000 0018"), birth_date_for("9990000018"));
        for _ in 0..200 {
            let date = birth_date_for(&random_test_number());
            chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").expect("a real date");
        }
    }

    #[test]
    fn the_check_digit_of_a_known_number() {
        assert_eq!(check_digit(&[9, 4, 3, 4, 7, 6, 5, 9, 1]), Some(9));
    }

    #[test]
    fn generated_numbers_are_valid_and_in_the_test_range() {
        for _ in 0..200 {
            let number = random_test_number();
            let digits: Vec<u8> = number
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_digit(10).expect("digit") as u8)
                .collect();
            assert_eq!(digits.len(), 10, "{number}");
            assert_eq!(&digits[..3], &[9, 9, 9], "{number}");
            let first_nine: [u8; 9] = digits[..9].try_into().expect("nine");
            assert_eq!(check_digit(&first_nine), Some(digits[9]), "{number}");
        }
    }
}
