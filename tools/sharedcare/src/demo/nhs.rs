//! NHS numbers from the test range (999 000 0000 – 999 999 9999) with a
//! valid Modulus 11 check digit: never a real patient's. Random ones (the
//! demo, the bench's own patient) come from 999 0xx xxxx – 999 7xx xxxx;
//! 999 8xx xxxx – 999 9xx xxxx is kept for the people `bench` seeds, so a
//! random number never takes one of theirs in a shared data dir.

use rand::Rng;

/// A random valid test-range NHS number, spaced "999 123 4567".
pub fn random_test_number() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let mut digits = [9u8; 9];
        for digit in digits.iter_mut().skip(3) {
            *digit = rng.gen_range(0..10);
        }
        digits[3] = rng.gen_range(0..BENCH_FIRST_DIGIT);
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

/// The fourth digit from which numbers are the bench's.
const BENCH_FIRST_DIGIT: u8 = 8;

/// Every valid number of the bench's part of the range, in order, without
/// spaces ("9998000001", …).
pub fn bench_numbers() -> impl Iterator<Item = String> {
    let first = 999_000_000 + u32::from(BENCH_FIRST_DIGIT) * 100_000;
    (first..=999_999_999u32).filter_map(|nine| {
        let text = nine.to_string();
        let mut digits = [0u8; 9];
        for (digit, c) in digits.iter_mut().zip(text.bytes()) {
            *digit = c - b'0';
        }
        let check = check_digit(&digits)?;
        // one repeated digit is refused
        (!digits.iter().all(|d| *d == check)).then(|| format!("{text}{check}"))
    })
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
            assert!(digits[3] < BENCH_FIRST_DIGIT, "not the bench's: {number}");
        }
    }

    #[test]
    fn the_bench_numbers_are_valid_and_its_own() {
        let numbers: Vec<String> = bench_numbers().collect();
        assert!(numbers.len() > 150_000, "{}", numbers.len());
        for number in numbers.iter().step_by(997) {
            let digits: Vec<u8> = number.bytes().map(|c| c - b'0').collect();
            assert_eq!(&digits[..3], &[9, 9, 9], "{number}");
            assert!(digits[3] >= BENCH_FIRST_DIGIT, "{number}");
            let first_nine: [u8; 9] = digits[..9].try_into().expect("nine");
            assert_eq!(check_digit(&first_nine), Some(digits[9]), "{number}");
        }
        assert!(numbers.last().is_some_and(|n| n.starts_with("9999")));
    }
}
