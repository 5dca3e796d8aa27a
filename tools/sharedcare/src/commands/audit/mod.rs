//! `sharedcare audit`: check the audit log as an outside auditor would,
//! through its public API only, and derive the key to check it with.
//!
//! `verify` fetches a fresh signed tree head and checks its signature with
//! the log's verifier key (given out of band), checks that it extends the
//! head this machine verified last time (a consistency proof; the last head
//! is kept in a state file, so a log rolled back or rewritten since is
//! caught), re-derives the root from every entry and compares, and proves
//! the inclusion of any entries asked about. When the root differs it finds
//! the first entry that does not match the signed tree (by consistency
//! proofs of prefixes: O(log n) calls) and names it.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use sharedcare_audit::{
    auditor::leaf_hash_of,
    domain::{
        Hash,
        checkpoint::{LogSigner, LogVerifierKey, TreeHead},
        merkle::{MemoryTree, verify_consistency, verify_inclusion},
    },
};
use sharedcare_proto::audit::v1::{
    AuditEntry, BreakGlassAccess, ConsistencyProofRequest, InclusionProofRequest,
    ListBreakGlassAccessesRequest, ListEntriesRequest, SignedTreeHeadRequest,
    audit_service_client::AuditServiceClient,
};
use tonic::transport::Channel;

use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    output::out,
};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the log: signed head, consistency with the last verified
    /// head, every entry against the tree, and chosen entries' inclusion.
    /// Needs a platform auditor's token.
    Verify(VerifyArgs),
    /// Print the verifier key of a tree-head signing key (PKCS#8 PEM), to
    /// give to auditors.
    VerifierKey(VerifierKeyArgs),
    /// The break-glass accesses made by an organisation's staff, across
    /// patients, oldest first: for its privacy officer (their own
    /// organisation) or a platform auditor (any, or all).
    BreakGlass {
        /// ODS code of the organisation [default: the caller's own; every
        /// organisation for a platform auditor].
        #[arg(long, default_value = "", hide_default_value = true)]
        ods: String,
    },
}

/// The audit log's verifier key, given on the command line or in a file.
#[derive(Debug, Args)]
pub struct VerifierKeyArg {
    /// The log's verifier key, `<name>+<key id>+<key>` (`sharedcare dev`
    /// writes it to `<data-dir>/audit-log.vkey`).
    #[arg(
        long,
        env = "SHAREDCARE_AUDIT_VERIFIER_KEY",
        conflicts_with = "public_key_file"
    )]
    pub public_key: Option<String>,
    /// A file holding the verifier key.
    #[arg(long)]
    pub public_key_file: Option<PathBuf>,
}

impl VerifierKeyArg {
    /// The key given; an error saying how to give it when none was.
    pub fn load(&self) -> anyhow::Result<LogVerifierKey> {
        let text = match (&self.public_key, &self.public_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the verifier key {}", path.display()))?,
            (None, None) => {
                return Err(anyhow!(
                    "give the log's verifier key: --public-key or --public-key-file \
                     (`sharedcare dev` writes it to <data-dir>/audit-log.vkey)"
                ));
            }
        };
        LogVerifierKey::parse(&text).map_err(|e| anyhow!("{e}"))
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub key: VerifierKeyArg,
    /// Where the last verified head is kept between runs.
    #[arg(long, default_value = "audit-verify.state")]
    pub state_file: PathBuf,
    /// Also prove this entry's inclusion (repeatable).
    #[arg(long = "entry", value_name = "SEQUENCE")]
    pub entries: Vec<i64>,
}

#[derive(Debug, Args)]
pub struct VerifierKeyArgs {
    /// The signing key, PKCS#8 PEM (what `audit.signing_key` is set to).
    #[arg(long)]
    pub key_file: PathBuf,
    /// The log's name (`audit.log_name`).
    #[arg(long, default_value = "sharedcare.local/audit")]
    pub log_name: String,
}

pub async fn run(services: &Services, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(args) => {
            let key = args.key.load()?;
            let mut auditor = Auditor {
                client: services.audit()?,
                token: services.token()?.to_owned(),
            };
            let verified = auditor
                .verify_and_keep(&key, &args.state_file, &args.entries)
                .await
                .map_err(|e| match e.downcast_ref::<Failure>() {
                    Some(failure) => anyhow!("the audit log does NOT verify: {failure}"),
                    None => e,
                })?;
            for line in verified.report() {
                out!("{line}");
            }
            Ok(())
        }
        AuditCommand::BreakGlass { ods } => {
            let accesses = list_break_glass(services, &ods).await?;
            for access in &accesses {
                let line = access.line.clone().unwrap_or_default();
                out!(
                    "patient {}  {}",
                    access.patient_id,
                    crate::commands::access_report::format_line(&line)
                );
            }
            if accesses.is_empty() {
                out!("no break-glass accesses recorded");
            }
            Ok(())
        }
        AuditCommand::VerifierKey(args) => {
            let pem = std::fs::read_to_string(&args.key_file)
                .with_context(|| format!("reading {}", args.key_file.display()))?;
            let key = ed25519_from_pem(&pem)?;
            let signer =
                LogSigner::new(&args.log_name, key).map_err(|e| anyhow!("--log-name: {e}"))?;
            out!("{}", signer.verifier());
            Ok(())
        }
    }
}

/// Calls ListBreakGlassAccesses page after page: the break-glass accesses
/// made by `ods`'s staff (empty: the caller's own organisation, or every
/// one for a platform auditor), oldest first.
pub async fn list_break_glass(
    services: &Services,
    ods: &str,
) -> anyhow::Result<Vec<BreakGlassAccess>> {
    let mut client = services.audit()?;
    let mut page_token = String::new();
    let mut accesses = Vec::new();
    loop {
        let page = client
            .list_break_glass_accesses(bearer(
                ListBreakGlassAccessesRequest {
                    organisation_ods_code: ods.to_owned(),
                    page_size: 500,
                    page_token,
                },
                services.token()?,
            )?)
            .await
            .grpc()?;
        accesses.extend(page.accesses);
        if page.next_page_token.is_empty() {
            return Ok(accesses);
        }
        page_token = page.next_page_token;
    }
}

fn ed25519_from_pem(pem: &str) -> anyhow::Result<ed25519_dalek::SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
        .map_err(|_| anyhow!("--key-file is not an Ed25519 private key in PKCS#8 PEM"))
}

/// The last verified checkpoint, checked again (a state file edited to
/// hide a rollback does not verify).
fn read_state(path: &Path, key: &LogVerifierKey) -> anyhow::Result<Option<TreeHead>> {
    match std::fs::read_to_string(path) {
        Ok(note) => key.verify(&note).map(Some).map_err(|e| {
            anyhow!(
                "the last verified head in {} does not verify ({e}); it was not written by this \
                 tool for this log",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_state(path: &Path, checkpoint: &str) -> anyhow::Result<()> {
    // Write then rename: a crash never leaves half a head behind.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, checkpoint).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Why the log does not verify, in plain words; each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the signed tree head does not verify: {0}")]
    BadHead(String),
    #[error(
        "the log has shrunk: it now holds {now} entries, but {before} were verified before (a rollback)"
    )]
    Rollback { before: u64, now: u64 },
    #[error(
        "the log of {now} entries does not extend the one of {before} entries verified before: its history was rewritten"
    )]
    Rewritten { before: u64, now: u64 },
    #[error("entry {0} is missing from the log")]
    Missing(u64),
    #[error(
        "entry {0} does not match the signed tree: it was altered, inserted, removed or reordered"
    )]
    Altered(u64),
    #[error("entry {0} is in the log but in no signed tree head: it was inserted")]
    Unsigned(u64),
    #[error("entry {0} is not included in the signed tree")]
    NotIncluded(u64),
}

/// What a successful run established.
#[derive(Debug)]
pub struct Verified {
    pub head: TreeHead,
    pub checkpoint: String,
    pub previous: Option<u64>,
    pub proved: Vec<u64>,
}

impl Verified {
    fn report(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "audit log verified: {} entries; the tree head signed by {} has root {}",
            self.head.size, self.head.origin, self.head.root
        )];
        lines.push(match self.previous {
            Some(before) => format!(
                "it extends the head verified before ({before} entries): nothing was rolled back or rewritten"
            ),
            None => "no head was verified before: this one is kept to compare with next time".into(),
        });
        lines.push(
            "every entry was re-hashed and the tree re-derived: none was altered, removed, inserted or reordered"
                .into(),
        );
        for sequence in &self.proved {
            lines.push(format!(
                "entry {sequence} is included (inclusion proof checked)"
            ));
        }
        lines
    }
}

const PAGE: i32 = 500;

pub struct Auditor {
    pub client: AuditServiceClient<Channel>,
    pub token: String,
}

impl Auditor {
    async fn signed_head(&mut self, key: &LogVerifierKey) -> anyhow::Result<(TreeHead, String)> {
        let response = self
            .client
            .signed_tree_head(bearer(SignedTreeHeadRequest { fresh: true }, &self.token)?)
            .await
            .grpc()?;
        let head = key
            .verify(&response.checkpoint)
            .map_err(|e| Failure::BadHead(e.to_string()))?;
        if i64::try_from(head.size).ok() != Some(response.tree_size)
            || head.root.to_vec() != response.root_hash
        {
            return Err(Failure::BadHead(
                "its size or root differs from the signed checkpoint".into(),
            )
            .into());
        }
        Ok((head, response.checkpoint))
    }

    async fn consistent(
        &mut self,
        old: u64,
        old_root: &Hash,
        head: &TreeHead,
    ) -> anyhow::Result<bool> {
        let proof = self
            .client
            .consistency_proof(bearer(
                ConsistencyProofRequest {
                    first_tree_size: to_i64(old),
                    second_tree_size: to_i64(head.size),
                },
                &self.token,
            )?)
            .await
            .grpc()?
            .proof;
        Ok(verify_consistency(
            old,
            head.size,
            old_root.as_bytes(),
            head.root.as_bytes(),
            &proof,
        )
        .is_ok())
    }

    async fn page(&mut self, after: u64) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(self
            .client
            .list_entries(bearer(
                ListEntriesRequest {
                    after_sequence: to_i64(after),
                    page_size: PAGE,
                },
                &self.token,
            )?)
            .await
            .grpc()?
            .entries)
    }

    /// [`Self::verify`] against the head kept in `state_file`, which the
    /// verified head then replaces.
    pub async fn verify_and_keep(
        &mut self,
        key: &LogVerifierKey,
        state_file: &Path,
        entries: &[i64],
    ) -> anyhow::Result<Verified> {
        let last = read_state(state_file, key)?;
        let verified = self.verify(key, last.as_ref(), entries).await?;
        write_state(state_file, &verified.checkpoint)?;
        Ok(verified)
    }

    /// The whole check (see the module's documentation). A failure of the
    /// log is a [`Failure`]; other errors are failures to ask.
    pub async fn verify(
        &mut self,
        key: &LogVerifierKey,
        last: Option<&TreeHead>,
        entries: &[i64],
    ) -> anyhow::Result<Verified> {
        let (head, checkpoint) = self.signed_head(key).await?;
        if let Some(last) = last {
            if head.size < last.size {
                return Err(Failure::Rollback {
                    before: last.size,
                    now: head.size,
                }
                .into());
            }
            if last.size > 0 && !self.consistent(last.size, &last.root, &head).await? {
                return Err(Failure::Rewritten {
                    before: last.size,
                    now: head.size,
                }
                .into());
            }
        }

        // Every entry of the signed tree, in order and without gaps.
        let mut tree = MemoryTree::new();
        let mut beyond = Vec::new();
        let mut after = 0;
        'pages: loop {
            let page = self.page(after).await?;
            let full = page.len() == PAGE as usize;
            for entry in page {
                let sequence = u64::try_from(entry.sequence).unwrap_or(0);
                if sequence > head.size {
                    beyond.push(sequence);
                    break 'pages;
                }
                let expected = tree.size() + 1;
                if sequence > expected {
                    return Err(Failure::Missing(expected).into());
                }
                if sequence < expected {
                    return Err(Failure::Altered(sequence).into());
                }
                tree.push(leaf_hash_of(&entry));
                after = sequence;
            }
            if !full {
                break;
            }
        }
        if tree.size() < head.size {
            return Err(Failure::Missing(tree.size() + 1).into());
        }
        let root = tree.root(head.size).map_err(|e| anyhow!("{e}"))?;
        if root != head.root {
            return Err(Failure::Altered(self.first_bad(&tree, &head).await?).into());
        }
        // Entries past the head: the log may have grown since; a fresh head
        // must cover them, or they were put there behind the log's back.
        if let Some(&first) = beyond.first() {
            let (latest, _) = self.signed_head(key).await?;
            if first > latest.size {
                return Err(Failure::Unsigned(first).into());
            }
        }

        let mut proved = Vec::new();
        for &sequence in entries {
            let index = u64::try_from(sequence - 1)
                .ok()
                .filter(|i| *i < head.size)
                .ok_or_else(|| {
                    anyhow!(
                        "--entry {sequence} is not in the log of {} entries",
                        head.size
                    )
                })?;
            let path = self
                .client
                .inclusion_proof(bearer(
                    InclusionProofRequest {
                        sequence,
                        tree_size: to_i64(head.size),
                    },
                    &self.token,
                )?)
                .await
                .grpc()?
                .audit_path;
            let leaf =
                leaf_at(&tree, index).ok_or_else(|| anyhow!("entry {sequence} was not read"))?;
            verify_inclusion(
                leaf.as_bytes(),
                index,
                head.size,
                &path,
                head.root.as_bytes(),
            )
            .map_err(|_| Failure::NotIncluded(u64::try_from(sequence).unwrap_or(0)))?;
            proved.push(index + 1);
        }
        Ok(Verified {
            head,
            checkpoint,
            previous: last.map(|l| l.size),
            proved,
        })
    }

    /// The first entry whose prefix of the log no longer matches the signed
    /// tree: the smallest k whose prefix root is not consistent with the
    /// head. Prefixes before the first bad entry are consistent and all
    /// after it are not, so a binary search finds it.
    async fn first_bad(&mut self, tree: &MemoryTree, head: &TreeHead) -> anyhow::Result<u64> {
        let (mut good, mut bad) = (0u64, head.size);
        while bad - good > 1 {
            let mid = good + (bad - good) / 2;
            let root = tree.root(mid).map_err(|e| anyhow!("{e}"))?;
            if self.consistent(mid, &root, head).await? {
                good = mid;
            } else {
                bad = mid;
            }
        }
        Ok(bad)
    }
}

fn leaf_at(tree: &MemoryTree, index: u64) -> Option<Hash> {
    use sharedcare_audit::domain::merkle::{NodeAddr, NodeReader};
    tree.node(NodeAddr::leaf(index)).ok()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
