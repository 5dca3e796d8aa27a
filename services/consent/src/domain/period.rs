//! When a relationship or directive applies.

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use sharedcare_kit::Error;

/// `[start, end)`: from `start`, until `end` when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl Period {
    /// `start` defaults to `now`; `end`, when given, must be after `start`.
    /// Times are kept to the microsecond, which is what both databases hold,
    /// and must lie in years 1–9999 (the range of `google.protobuf.Timestamp`).
    pub fn parse(
        start_field: &str,
        end_field: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let start = in_range(start_field, start.unwrap_or(now))?;
        let end = end.map(|e| in_range(end_field, e)).transpose()?;
        if let Some(end) = end
            && end <= start
        {
            return Err(Error::invalid(end_field, "must be after the start time"));
        }
        Ok(Period { start, end })
    }

    /// Whether the period has begun and not yet ended at `t`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && self.end.is_none_or(|end| end > t)
    }
}

/// `t` to the microsecond: what both databases keep, so a value reads back
/// exactly as it was stored.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn in_range(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    if !(1..=9999).contains(&t.year()) {
        return Err(Error::invalid(field, "must be between years 1 and 9999"));
    }
    Ok(to_micros(t))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, h, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn start_defaults_to_now_and_end_must_follow_it() {
        let p = Period::parse("s", "e", None, None, at(10)).expect("valid");
        assert_eq!(
            p,
            Period {
                start: at(10),
                end: None
            }
        );
        assert!(Period::parse("s", "e", Some(at(9)), Some(at(11)), at(10)).is_ok());
        for end in [at(9), at(10)] {
            let err = Period::parse("s", "end_time", Some(at(10)), Some(end), at(0))
                .expect_err("end not after start");
            assert_eq!(err.field.as_deref(), Some("end_time"));
        }
    }

    #[test]
    fn contains_is_half_open() {
        let p = Period::parse("s", "e", Some(at(9)), Some(at(11)), at(0)).expect("valid");
        assert!(!p.contains(at(8)));
        assert!(p.contains(at(9)));
        assert!(p.contains(at(10)));
        assert!(!p.contains(at(11)));
        let open = Period::parse("s", "e", Some(at(9)), None, at(0)).expect("valid");
        assert!(open.contains(at(23)));
    }

    #[test]
    fn times_are_kept_to_the_microsecond_and_bounded() {
        let t = at(9) + chrono::Duration::nanoseconds(1_234_567);
        let p = Period::parse("s", "e", Some(t), None, at(0)).expect("valid");
        assert_eq!(p.start.timestamp_subsec_nanos(), 1_234_000);
        let ancient = DateTime::from_timestamp(-70_000_000_000, 0).expect("representable");
        let err = Period::parse("start_time", "e", Some(ancient), None, at(0)).expect_err("year");
        assert_eq!(err.field.as_deref(), Some("start_time"));
    }
}
