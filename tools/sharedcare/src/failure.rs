//! How a failed call reads on the terminal: `error: <CODE>: <message>`,
//! with the gRPC code spelled as in the spec (PERMISSION_DENIED), and the
//! stable reason from `google.rpc.ErrorInfo` when the message does not
//! already name it.

use std::fmt;

use tonic_types::StatusExt;

/// A gRPC status kept whole, so the demo can check its code and `main` can
/// print it as `<CODE>: <message>`.
#[derive(Debug)]
pub struct GrpcError(pub tonic::Status);

impl GrpcError {
    pub fn code(&self) -> tonic::Code {
        self.0.code()
    }

    /// The `google.rpc.ErrorInfo` reason, e.g. `NOT_OWN_ORGANISATION`.
    pub fn reason(&self) -> Option<String> {
        self.0
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone())
            .filter(|reason| !reason.is_empty())
    }
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.0.message();
        write!(f, "{}: {message}", code_name(self.0.code()))?;
        match self.reason() {
            Some(reason) if !message.contains(&reason) => write!(f, " [{reason}]"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for GrpcError {}

/// Turns a call's `Status` into an `anyhow::Error` that still holds it.
pub trait GrpcResult<T> {
    fn grpc(self) -> anyhow::Result<T>;
}

impl<T> GrpcResult<T> for Result<tonic::Response<T>, tonic::Status> {
    fn grpc(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| GrpcError(status).into())
    }
}

/// The status code of a failed call, when it was a gRPC failure.
pub fn status_code(err: &anyhow::Error) -> Option<tonic::Code> {
    err.downcast_ref::<GrpcError>().map(GrpcError::code)
}

pub use sharedcare_kit::error::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_code_then_message() {
        let err: anyhow::Error = GrpcError(tonic::Status::permission_denied(
            "consent denied: NO_CARE_RELATIONSHIP",
        ))
        .into();
        assert_eq!(
            err.to_string(),
            "PERMISSION_DENIED: consent denied: NO_CARE_RELATIONSHIP"
        );
        assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied));
        assert_eq!(status_code(&anyhow::anyhow!("other")), None);
    }

    #[test]
    fn a_reason_the_message_does_not_name_is_added() {
        use tonic_types::{ErrorDetails, StatusExt};
        let status = |message: &str| {
            tonic::Status::with_error_details(
                tonic::Code::PermissionDenied,
                message,
                ErrorDetails::with_error_info("NOT_OWN_ORGANISATION", "sharedcare", []),
            )
        };
        assert_eq!(
            GrpcError(status("only for itself")).to_string(),
            "PERMISSION_DENIED: only for itself [NOT_OWN_ORGANISATION]"
        );
        assert_eq!(
            GrpcError(status("NOT_OWN_ORGANISATION: only for itself")).to_string(),
            "PERMISSION_DENIED: NOT_OWN_ORGANISATION: only for itself"
        );
    }
}
