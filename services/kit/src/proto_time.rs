//! Conversions between `chrono` and `google.protobuf.Timestamp`.

use chrono::{DateTime, Utc};

use crate::Error;

pub fn to_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Reads an optional timestamp field, naming the field when it is out of range.
pub fn from_proto(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    match t {
        None => Ok(None),
        Some(ts) => {
            let nanos = u32::try_from(ts.nanos)
                .map_err(|_| Error::invalid(field, "nanos must be between 0 and 999,999,999"))?;
            DateTime::from_timestamp(ts.seconds, nanos)
                .map(Some)
                .ok_or_else(|| Error::invalid(field, "timestamp out of range"))
        }
    }
}
