//! One error type for every service, carrying its gRPC code. Converted to
//! `tonic::Status` in exactly one place (`From<Error> for Status`).

use std::fmt;

use tonic_types::{ErrorDetails, StatusExt};

/// Error domain reported in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "sharedcare.nhs";

/// The gRPC codes our services answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    Internal,
}

impl Code {
    fn to_tonic(self) -> tonic::Code {
        match self {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Internal => tonic::Code::Internal,
        }
    }
}

/// An error on its way to a caller. `message` is safe to show the caller;
/// `detail` is for our logs only and never leaves the process.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// The request field that is wrong (INVALID_ARGUMENT).
    pub field: Option<String>,
    /// A stable machine-readable reason for `google.rpc.ErrorInfo`.
    pub reason: Option<String>,
    detail: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            reason: None,
            detail: None,
        }
    }

    /// INVALID_ARGUMENT naming the field that is wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..Self::new(Code::InvalidArgument, "")
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }

    /// For RPCs whose behaviour belongs to a later issue: never a fake success.
    pub fn unimplemented(rpc: &str, lands_with: &str) -> Self {
        Self::new(
            Code::Unimplemented,
            format!("{rpc} is not implemented yet; it lands with {lands_with}"),
        )
    }

    /// A failure the caller cannot fix. The caller sees only `context`; the
    /// cause goes to our log. Causes must not carry patient data.
    ///
    /// A database error that says the database could not be reached
    /// ([`crate::db::unreachable`]) is UNAVAILABLE instead: the caller may
    /// try again once it is back.
    pub fn internal(context: impl Into<String>, cause: impl fmt::Display + 'static) -> Self {
        let context = context.into();
        let unreachable = (&cause as &dyn std::any::Any)
            .downcast_ref::<sea_orm::DbErr>()
            .is_some_and(crate::db::unreachable);
        if unreachable {
            return Self {
                detail: Some(format!("{context}: {cause}")),
                ..Self::new(
                    Code::Unavailable,
                    format!("{context}: the database cannot be reached; try again"),
                )
            };
        }
        Self {
            detail: Some(format!("{context}: {cause}")),
            ..Self::new(Code::Internal, context)
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Prefixes the message with what we were doing, so it reads like a path
    /// ("calling consent: connection refused").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        if let Some(detail) = self.detail.take() {
            self.detail = Some(format!("{context}: {detail}"));
        }
        self
    }

    /// Whether this error says the caller sent something wrong.
    pub fn is_invalid_argument(&self) -> bool {
        self.code == Code::InvalidArgument
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match (&err.detail, err.code) {
            (Some(detail), Code::Internal) => tracing::error!(error = %detail, "internal error"),
            (Some(detail), _) => tracing::warn!(error = %detail, code = ?err.code, "unavailable"),
            (None, _) => {}
        }
        let mut details = ErrorDetails::new();
        if let Some(field) = &err.field {
            details.add_bad_request_violation(field.clone(), err.message.clone());
        }
        if let Some(reason) = &err.reason {
            details.set_error_info(
                reason.clone(),
                ERROR_DOMAIN,
                std::collections::HashMap::<String, String>::new(),
            );
        }
        if err.field.is_none() && err.reason.is_none() {
            tonic::Status::new(err.code.to_tonic(), err.message)
        } else {
            tonic::Status::with_error_details(err.code.to_tonic(), err.message, details)
        }
    }
}

/// Reads a status from another of our services back into an [`Error`],
/// keeping its code, so a denial stays a denial as it travels.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let code = match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::FailedPrecondition | tonic::Code::Aborted => Code::FailedPrecondition,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::Unauthenticated => Code::Unauthenticated,
            tonic::Code::ResourceExhausted => Code::ResourceExhausted,
            tonic::Code::Unimplemented => Code::Unimplemented,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Code::Unavailable
            }
            _ => Code::Internal,
        };
        Error::new(code, status.message().to_owned())
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        Error::internal("database error", err)
    }
}

/// gRPC's own name for a status code, as in its status-code guide and in
/// metrics labels and the CLI's messages.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_bad_request_details() {
        let status = tonic::Status::from(Error::invalid("nhs_number", "check digit is wrong"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "nhs_number: check digit is wrong");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "nhs_number");
    }

    #[test]
    fn internal_error_hides_its_cause() {
        let status = tonic::Status::from(Error::internal(
            "storing patient",
            "UNIQUE constraint failed: patients.nhs_number at /var/lib/x.db",
        ));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "storing patient");
    }

    #[test]
    fn context_reads_like_a_path() {
        let err = Error::unavailable("connection refused").context("calling consent");
        assert_eq!(err.message, "calling consent: connection refused");
    }
}
