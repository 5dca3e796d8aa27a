//! How the demo tells its story on standard output: a plain-words heading
//! per step, then for each call the call made (`→ RPC by whom: key
//! fields`) and the answer in plain words (`← permitted: …` or `← refused:
//! CODE — message`). A call the story expects refused that is permitted, or
//! the other way round, is an error that ends the demo.
//!
//! Only the narration asked for prints anything about the patient, and it
//! names them by their made-up details and the ids the platform gave; no
//! log line, span or metric is written here.

use std::io::BufRead;

use anyhow::{anyhow, bail};

use crate::{failure::GrpcError, output::out};

/// Numbers the steps and, with `--step`, waits for Enter between them.
pub struct Narrator {
    step: usize,
    total: usize,
    pause: bool,
}

impl Narrator {
    pub fn new(total: usize, pause: bool) -> Self {
        Narrator {
            step: 0,
            total,
            pause,
        }
    }

    /// Starts the next step: after the first, with `--step`, waits for a
    /// line on standard input (end of input goes on without waiting).
    pub async fn step(&mut self, title: &str) -> anyhow::Result<()> {
        if self.pause && self.step > 0 {
            out!(
                "\n(press Enter for step {} of {})",
                self.step + 1,
                self.total
            );
            wait_for_enter().await?;
        }
        self.step += 1;
        out!("\nStep {} — {title}", self.step);
        Ok(())
    }

    pub fn steps_told(&self) -> usize {
        self.step
    }
}

/// Reads one line from standard input; end of input is fine too.
async fn wait_for_enter() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(drop)
    })
    .await
    .map_err(|e| anyhow!("waiting for Enter: {e}"))?
    .map_err(|e| anyhow!("reading standard input: {e}"))
}

/// A sentence of the story.
pub fn say(line: impl AsRef<str>) {
    out!("  {}", line.as_ref());
}

/// The call about to be made: which RPC, by whom, with which key fields.
pub fn call(rpc: &str, who: &str, fields: impl AsRef<str>) {
    let fields = fields.as_ref();
    if fields.is_empty() {
        out!("  → {rpc} by {who}");
    } else {
        out!("  → {rpc} by {who}: {fields}");
    }
}

/// The answer, in plain words.
pub fn answer(line: impl AsRef<str>) {
    out!("  ← {}", line.as_ref());
}

/// Why an answer is what it is (an indented note under it).
pub fn why(line: impl AsRef<str>) {
    out!("    {}", line.as_ref());
}

/// A call the story expects to be permitted: its answer, or an error
/// saying that `what` was refused when it should not have been.
pub fn permitted<T>(result: anyhow::Result<T>, what: &str) -> anyhow::Result<T> {
    result.map_err(|e| match e.downcast_ref::<GrpcError>() {
        Some(refusal) => anyhow!(
            "the story went wrong: {what} should have been permitted, but was refused: {refusal}"
        ),
        None => e.context(what.to_owned()),
    })
}

/// A call the story expects refused with `code`, naming `reason` (in the
/// message or the ErrorInfo) when one is given. Prints the refusal and
/// returns it; an error if the call was permitted or refused otherwise.
pub fn refused<T>(
    result: anyhow::Result<T>,
    code: tonic::Code,
    reason: Option<&str>,
    what: &str,
) -> anyhow::Result<String> {
    let expected = crate::failure::code_name(code);
    let e = match result {
        Ok(_) => bail!(
            "the story went wrong: {what} should have been refused ({expected}), but was permitted"
        ),
        Err(e) => e,
    };
    let Some(refusal) = e.downcast_ref::<GrpcError>() else {
        return Err(e.context(format!("{what}: expected {expected}")));
    };
    let text = refusal.to_string();
    if refusal.code() != code || reason.is_some_and(|r| !text.contains(r)) {
        bail!(
            "the story went wrong: {what} should have been refused with {expected}{}, but the \
             answer was {text}",
            reason.map(|r| format!(" naming {r}")).unwrap_or_default()
        );
    }
    let (code_name, message) = text.split_once(": ").unwrap_or((expected, ""));
    answer(format!("refused: {code_name} — {message}"));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(message: &str) -> anyhow::Result<()> {
        Err(GrpcError(tonic::Status::permission_denied(message)).into())
    }

    #[test]
    fn an_expected_refusal_passes_and_anything_else_fails() {
        let code = tonic::Code::PermissionDenied;
        let text = refused(
            denied("consent denied: NO_CARE_RELATIONSHIP"),
            code,
            Some("NO_CARE_RELATIONSHIP"),
            "a read",
        )
        .expect("refused as expected");
        assert!(text.contains("NO_CARE_RELATIONSHIP"));

        let err = refused(Ok(()), code, None, "a read").expect_err("permitted");
        assert!(
            err.to_string().contains("should have been refused"),
            "{err}"
        );
        let err = refused(
            denied("consent denied: NO_LAWFUL_BASIS"),
            code,
            Some("NATIONAL_OPT_OUT"),
            "a research read",
        )
        .expect_err("another reason");
        assert!(err.to_string().contains("naming NATIONAL_OPT_OUT"), "{err}");
        let err = refused(
            Err::<(), _>(GrpcError(tonic::Status::not_found("no such record")).into()),
            code,
            None,
            "a read",
        )
        .expect_err("another code");
        assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    }

    #[test]
    fn an_expected_permission_fails_when_refused() {
        assert_eq!(permitted(Ok(3), "a read").expect("permitted"), 3);
        let err =
            permitted(denied("consent denied: X"), "the hospital's read").expect_err("refused");
        assert!(
            err.to_string()
                .contains("the hospital's read should have been permitted"),
            "{err}"
        );
    }
}
