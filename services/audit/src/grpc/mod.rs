//! The gRPC face of the audit log: take the grant the auth layer admitted
//! the call with (audit's table is [`crate::policy::ACCESS`]), decode into
//! the domain, call the store, encode. The only module that knows
//! `tonic::Status`.

mod convert;

use std::sync::Arc;

use sharedcare_kit::{
    Error,
    access::{Grant, Patients, grant},
};
use sharedcare_proto::audit::v1::{
    AccessReportRequest, AccessReportResponse, AppendBatchRequest, AppendBatchResponse,
    AppendRequest, AppendResponse, ConsistencyProofRequest, ConsistencyProofResponse,
    InclusionProofRequest, InclusionProofResponse, ListBreakGlassAccessesRequest,
    ListBreakGlassAccessesResponse, ListEntriesRequest, ListEntriesResponse, QueryRequest,
    QueryResponse, SignedTreeHeadRequest, SignedTreeHeadResponse,
    audit_service_server::AuditService,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Entry, MAX_BATCH, MAX_ID_CHARS, PageSize, PageToken, PatientId, optional_text},
    heads::TreeHeads,
    store::{AuditLogStore, Page, Proofs},
};

/// Scope to append events (platform services only).
pub const SCOPE_APPEND: &str = "audit.append";
/// Scope to read a patient's log and access report (with a patient token,
/// or a staff role that is a privacy officer or a platform auditor).
pub const SCOPE_READ: &str = "audit.read";
/// Most store pages one read scans for a privacy officer's entries, so a
/// patient with a long log and few of them cannot make one call read it all.
const MAX_SCANS_PER_PAGE: usize = 8;

pub struct AuditGrpc {
    pub store: Arc<dyn AuditLogStore>,
    pub heads: Arc<TreeHeads>,
}

/// A size or position from the wire: at least `min`, as u64.
fn count(field: &str, value: i64, min: i64) -> Result<u64, Error> {
    if value < min {
        return Err(Error::invalid(field, format!("must be at least {min}")));
    }
    u64::try_from(value).map_err(|_| Error::invalid(field, "is out of range"))
}

/// `size` (named `field`) against the log's current size.
fn within_log(field: &str, size: u64, log_size: u64) -> Result<(), Error> {
    if size > log_size {
        return Err(Error::invalid(
            field,
            format!("is beyond the log, which holds {log_size} entries"),
        ));
    }
    Ok(())
}

/// Which of a patient's entries a read may return.
enum Visible {
    /// Every entry: the patient themselves, or a platform auditor.
    All,
    /// Entries about accesses made by this organisation (a privacy officer).
    AccessesBy(String),
}

impl Visible {
    /// What `grant` may read of `patient`'s log: PERMISSION_DENIED for a
    /// patient naming another patient.
    fn of(grant: &Grant, patient: &PatientId) -> Result<Self, Error> {
        match grant.patients {
            Patients::Own => {
                grant.check_own(patient.as_str())?;
                Ok(Visible::All)
            }
            Patients::Any => Ok(Visible::All),
            Patients::OwnOrganisationAccesses => Ok(Visible::AccessesBy(own_organisation(grant)?)),
            Patients::Related | Patients::None => Err(not_in_table(grant)),
        }
    }

    fn shows(&self, entry: &Entry) -> Result<bool, Error> {
        match self {
            Visible::All => Ok(true),
            Visible::AccessesBy(organisation) => {
                Ok(convert::actor_organisation(entry)? == organisation.as_str())
            }
        }
    }
}

/// A privacy officer's organisation, which their grant is bounded by.
fn own_organisation(grant: &Grant) -> Result<String, Error> {
    let organisation = &grant.principal.organisation;
    if organisation.trim().is_empty() {
        // Empty would match every patient's own accesses.
        return Err(Error::permission_denied(format!(
            "{}: a privacy officer's token must name their organisation",
            grant.method
        ))
        .with_reason("NO_ORGANISATION"));
    }
    Ok(organisation.clone())
}

/// A grant audit's table never gives to readers: fail closed.
fn not_in_table(grant: &Grant) -> Error {
    Error::permission_denied(format!(
        "{}: this grant does not allow reading the audit log",
        grant.method
    ))
    .with_reason("ACCESS_RULE")
}

/// Whose break-glass accesses `grant` may list when it names `named` (""
/// for none): `None` is every organisation's (a platform auditor only).
fn break_glass_scope(grant: &Grant, named: &str) -> Result<Option<String>, Error> {
    match grant.patients {
        Patients::Any => Ok((!named.is_empty()).then(|| named.to_owned())),
        Patients::OwnOrganisationAccesses => {
            let own = own_organisation(grant)?;
            if !named.is_empty() && named != own {
                return Err(Error::permission_denied(format!(
                    "{}: a privacy officer may list only their own organisation's \
                     break-glass accesses",
                    grant.method
                ))
                .with_reason("NOT_OWN_ORGANISATION"));
            }
            Ok(Some(own))
        }
        Patients::Own | Patients::Related | Patients::None => Err(not_in_table(grant)),
    }
}

impl AuditGrpc {
    /// Gives each line its entry and inclusion proof in the tree of one
    /// signed head: the last published when it covers the page, else a
    /// fresh one.
    async fn prove_lines(
        &self,
        entries: &[Entry],
        lines: &mut [sharedcare_proto::audit::v1::AccessReportLine],
    ) -> Result<SignedTreeHeadResponse, Error> {
        let newest = entries.iter().map(|e| e.sequence).max().unwrap_or(0);
        let mut signed = self.heads.latest().await?;
        if signed.head.size < newest {
            signed = self.heads.publish().await?;
        }
        let proofs = Proofs(self.store.as_ref());
        for (entry, line) in entries.iter().zip(lines.iter_mut()) {
            let leaf = entry
                .sequence
                .checked_sub(1)
                .ok_or_else(|| Error::internal("proving a report line", "sequence below 1"))?;
            let path = proofs.inclusion(leaf, signed.head.size).await?;
            line.inclusion_proof = path.iter().map(|h| h.to_vec()).collect();
            line.entry = Some(convert::encode_entry(entry)?);
        }
        convert::encode_head(&signed)
    }

    /// A page of the entries of one patient that `grant` may read, decoded
    /// from the request's fields.
    ///
    /// For a privacy officer the store's pages are filtered to the
    /// organisation's own accesses, scanning at most
    /// [`MAX_SCANS_PER_PAGE`] store pages: a page may then hold fewer
    /// entries than asked (even none) while `next` is still set, and a
    /// full page may be followed by an empty one. `next` continues after
    /// the last entry returned when the page is full, and after the last
    /// entry scanned otherwise, so paging on reaches every visible entry
    /// exactly once.
    async fn page(
        &self,
        grant: &Grant,
        patient_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page, Error> {
        let patient = PatientId::parse("patient_id", patient_id)?;
        let visible = Visible::of(grant, &patient)?;
        let size = PageSize::parse("page_size", page_size)?;
        let mut after = PageToken::parse("page_token", page_token)?;
        if matches!(visible, Visible::All) {
            return self.store.patient_entries(patient, after, size).await;
        }
        let wanted = usize::try_from(size.get()).unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let page = self
                .store
                .patient_entries(patient.clone(), after, size)
                .await?;
            for entry in page.entries {
                if entries.len() == wanted {
                    // Full: the next page starts after the last one kept.
                    let next = entries
                        .last()
                        .map(|last: &Entry| PageToken::after_sequence(last.sequence));
                    return Ok(Page { entries, next });
                }
                if visible.shows(&entry)? {
                    entries.push(entry);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
            }
        }
        Ok(Page {
            entries,
            next: after,
        })
    }
}

fn next_token(page: &Page) -> String {
    page.next.map(PageToken::encode).unwrap_or_default()
}

/// A span for storing one event, in the trace of the request that made it;
/// none for an event from an untraced request (no span per event on a
/// batch's path when tracing is off). A malformed or oversized
/// `traceparent` is ignored: tracing never refuses.
fn continued(trace_parent: &str) -> tracing::Span {
    const MAX_TRACE_PARENT: usize = 128;
    if trace_parent.is_empty() || trace_parent.len() > MAX_TRACE_PARENT {
        return tracing::Span::none();
    }
    sharedcare_kit::telemetry::continued_span("audit store event", trace_parent)
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "Append"))]
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let grant = grant(&request)?;
        let event = request.into_inner().event;
        let _continued = continued(event.as_ref().map_or("", |e| e.trace_parent.as_str()));
        let event = convert::decode_event("event", event, &grant.principal.id)?;
        let appended = self.store.append(convert::encode_for_log(&event)).await?;
        tracing::debug!(
            sequence = appended.entry.sequence,
            duplicate = appended.duplicate,
            "appended"
        );
        Ok(Response::new(AppendResponse {
            entry: Some(convert::encode_entry(&appended.entry)?),
            duplicate: appended.duplicate,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AppendBatch", events))]
    async fn append_batch(
        &self,
        request: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        let grant = grant(&request)?;
        let events = request.into_inner().events;
        tracing::Span::current().record("events", events.len());
        if events.is_empty() {
            return Err(Error::invalid("events", "must hold at least one event").into());
        }
        if events.len() > MAX_BATCH {
            return Err(
                Error::invalid("events", format!("must hold at most {MAX_BATCH} events")).into(),
            );
        }
        // Each event's work joins the trace of the request that made it
        // (its span lasts until the batch is committed).
        let _continued: Vec<tracing::Span> =
            events.iter().map(|e| continued(&e.trace_parent)).collect();
        // Every event is validated before anything is written.
        let encoded = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                convert::decode_event(&format!("events[{i}]"), Some(e), &grant.principal.id)
                    .map(|event| convert::encode_for_log(&event))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let appended = self.store.append_batch(encoded).await?;
        let entries = appended
            .iter()
            .map(|a| convert::encode_entry(&a.entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(AppendBatchResponse { entries }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Query"))]
    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let page = self
            .page(&grant, &req.patient_id, req.page_size, &req.page_token)
            .await?;
        let entries = page
            .entries
            .iter()
            .map(convert::encode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(QueryResponse {
            entries,
            next_page_token: next_token(&page),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AccessReport"))]
    async fn access_report(
        &self,
        request: Request<AccessReportRequest>,
    ) -> Result<Response<AccessReportResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let page = self
            .page(&grant, &req.patient_id, req.page_size, &req.page_token)
            .await?;
        let mut lines = page
            .entries
            .iter()
            .map(convert::encode_report_line)
            .collect::<Result<Vec<_>, _>>()?;
        let tree_head = if req.with_proofs {
            Some(self.prove_lines(&page.entries, &mut lines).await?)
        } else {
            None
        };
        Ok(Response::new(AccessReportResponse {
            lines,
            next_page_token: next_token(&page),
            tree_head,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListBreakGlassAccesses", accesses))]
    async fn list_break_glass_accesses(
        &self,
        request: Request<ListBreakGlassAccessesRequest>,
    ) -> Result<Response<ListBreakGlassAccessesResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let named = optional_text(
            "organisation_ods_code",
            &req.organisation_ods_code,
            MAX_ID_CHARS,
        )?;
        let scope = break_glass_scope(&grant, &named)?;
        let size = PageSize::parse("page_size", req.page_size)?;
        let after = PageToken::parse("page_token", &req.page_token)?;
        let page = self
            .store
            .break_glass_entries(scope.clone(), after, size)
            .await?;
        let mut accesses = Vec::with_capacity(page.entries.len());
        for entry in &page.entries {
            match convert::encode_break_glass_access(entry, scope.as_deref())? {
                Some(access) => accesses.push(access),
                // The index says break-glass, the hashed event does not
                // (or names another organisation): a damaged or altered
                // row, not listed. The sequence alone identifies it.
                None => tracing::warn!(
                    sequence = entry.sequence,
                    "break-glass index disagrees with the stored event; entry not listed"
                ),
            }
        }
        tracing::Span::current().record("accesses", accesses.len());
        Ok(Response::new(ListBreakGlassAccessesResponse {
            accesses,
            next_page_token: next_token(&page),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListEntries"))]
    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        grant(&request)?;
        let req = request.into_inner();
        let after = count("after_sequence", req.after_sequence, 0)?;
        let size = PageSize::parse("page_size", req.page_size)?;
        let entries = self
            .store
            .entries(after, size.get())
            .await?
            .iter()
            .map(convert::encode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListEntriesResponse { entries }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SignedTreeHead"))]
    async fn signed_tree_head(
        &self,
        request: Request<SignedTreeHeadRequest>,
    ) -> Result<Response<SignedTreeHeadResponse>, Status> {
        grant(&request)?;
        let signed = if request.into_inner().fresh {
            self.heads.publish().await?
        } else {
            self.heads.latest().await?
        };
        Ok(Response::new(convert::encode_head(&signed)?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "InclusionProof"))]
    async fn inclusion_proof(
        &self,
        request: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProofResponse>, Status> {
        grant(&request)?;
        let req = request.into_inner();
        let sequence = count("sequence", req.sequence, 1)?;
        let tree_size = count("tree_size", req.tree_size, 1)?;
        if tree_size < sequence {
            return Err(Error::invalid(
                "tree_size",
                format!("must be at least the entry's sequence ({sequence})"),
            )
            .into());
        }
        within_log("tree_size", tree_size, self.store.tree_size().await?)?;
        let path = Proofs(self.store.as_ref())
            .inclusion(sequence - 1, tree_size)
            .await?;
        Ok(Response::new(InclusionProofResponse {
            audit_path: path.iter().map(|h| h.to_vec()).collect(),
            leaf_index: req.sequence - 1,
            tree_size: req.tree_size,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ConsistencyProof"))]
    async fn consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProofResponse>, Status> {
        grant(&request)?;
        let req = request.into_inner();
        let first = count("first_tree_size", req.first_tree_size, 1)?;
        let second = count("second_tree_size", req.second_tree_size, 1)?;
        if second < first {
            return Err(Error::invalid(
                "second_tree_size",
                format!("must be at least first_tree_size ({first})"),
            )
            .into());
        }
        within_log("second_tree_size", second, self.store.tree_size().await?)?;
        let proof = Proofs(self.store.as_ref())
            .consistency(first, second)
            .await?;
        Ok(Response::new(ConsistencyProofResponse {
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }
}
