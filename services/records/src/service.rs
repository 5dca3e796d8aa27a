//! What records does with an access: consent first, audit always, data last.
//!
//! Every path reads the record's metadata (category, type) first, asks
//! consent about it, and only then opens the resource. A record consent
//! withholds looks exactly like one that does not exist: the caller gets the
//! answer an absent record would get. Searches and histories run only over
//! the categories consent permits, so neither a page's size nor its cursor
//! says that anything was left out.
//!
//! Every audit event goes into records' own outbox (kit::outbox) before the
//! access is answered — a write's in the write's transaction when the store
//! shares the outbox's database (else just before the write), a read's or a
//! denial's group-committed with its neighbours' — and the outbox's relay
//! ships them to audit in batches. When audit has been unreachable too long
//! the outbox refuses new accesses (fail closed).

use std::{collections::HashMap, sync::Arc};

use prost::Message;
use sharedcare_kit::{
    Error, auth::Principal, error::Code, merges::PatientMerges, outbox::Outbox, paging::CursorKey,
};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::Purpose,
};

use crate::{
    access::{AccessEvent, ConsentGate, Decision, category_to_pb},
    domain::{Category, IdempotencyKey, PatientId, Record, RecordId, SearchIndex, ValidResource},
    store::{
        AuditRow, Found, IdempotencyRow, RecordMeta, RecordStore, SearchQuery, SortKey, Stored,
        Write,
    },
};

pub struct Records {
    store: Arc<dyn RecordStore>,
    /// Woken after each write here; watchers also poll for other replicas'.
    written: Arc<tokio::sync::Notify>,
    consent: Arc<dyn ConsentGate>,
    outbox: Arc<Outbox>,
    cursors: CursorKey,
    pub max_resource_bytes: usize,
    /// identity's merges: a merged patient's records are the survivor's.
    merges: PatientMerges,
}

/// A resource to store, checked and classified.
pub struct Incoming {
    pub resource: ValidResource,
    pub category: Category,
}

/// One page of results and the cursor for the next (empty on the last).
pub struct Page {
    pub records: Vec<Record>,
    pub next: String,
}

const ABSENT: &str = "no such record for this patient";

fn record(meta: RecordMeta, resource_json: String) -> Record {
    Record {
        id: meta.id,
        patient_id: meta.patient_id,
        resource_type: meta.resource_type,
        version: meta.version,
        last_updated: meta.last_updated,
        category: meta.category,
        deleted: meta.deleted,
        resource_json,
    }
}

fn access<'a>(
    principal: &'a Principal,
    patient: &'a PatientId,
    action: Action,
    purpose: Purpose,
    resource_type: &'a str,
    record_id: &'a str,
) -> AccessEvent<'a> {
    AccessEvent {
        principal,
        patient_id: patient.as_str(),
        action,
        purpose,
        resource_type,
        record_id,
        source_service: crate::SERVICE_NAME,
        break_glass: None,
    }
}

impl Records {
    pub fn new(
        store: Arc<dyn RecordStore>,
        consent: Arc<dyn ConsentGate>,
        outbox: Arc<Outbox>,
        cursors: CursorKey,
        max_resource_bytes: usize,
    ) -> Self {
        Records {
            store,
            written: Arc::new(tokio::sync::Notify::new()),
            consent,
            outbox,
            cursors,
            max_resource_bytes,
            merges: PatientMerges::none(),
        }
    }

    /// Follows `merges`: reads for either id of a merged patient reach the
    /// records filed under both, new records are filed under the current
    /// id, and decisions kept about the patients a merge touches are
    /// dropped when it is heard.
    pub fn with_merges(mut self, merges: PatientMerges) -> Self {
        let mut heard = merges.subscribe();
        let consent = Arc::downgrade(&self.consent);
        tokio::spawn(async move {
            loop {
                match heard.recv().await {
                    Ok(notice) => {
                        let Some(consent) = consent.upgrade() else {
                            return;
                        };
                        for id in &notice.family {
                            consent.forget(id);
                        }
                    }
                    // Missed some: they are old news by the time the
                    // decisions they touch lapse (consent_cache.max_age_ms).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.merges = merges;
        self
    }

    /// The current version of record `id`, filed under any id of `patient`.
    async fn find_current(
        &self,
        patient: &PatientId,
        id: &RecordId,
    ) -> Result<Option<Stored>, Error> {
        for filed_under in self.merges.family(patient).await? {
            if let Some(found) = self.store.current(&filed_under, id).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// `store.search` over every id of the query's patient: each id's best
    /// `limit`, merged in sort order (the key is global, so a cursor works
    /// across them).
    async fn search_family(
        &self,
        query: &SearchQuery,
        after: Option<&SortKey>,
        limit: usize,
    ) -> Result<Vec<Found>, Error> {
        let family = self.merges.family(&query.patient_id).await?;
        if family.len() == 1 {
            return self.store.search(query, after, limit).await;
        }
        let mut found = Vec::new();
        for filed_under in family {
            let query = SearchQuery {
                patient_id: filed_under,
                ..query.clone()
            };
            found.extend(self.store.search(&query, after, limit).await?);
        }
        found.sort_by(|a, b| b.key.cmp(&a.key));
        found.truncate(limit);
        Ok(found)
    }

    /// The outbox that holds this service's audit events.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    async fn evaluate(
        &self,
        access: &AccessEvent<'_>,
        category: Category,
    ) -> Result<Decision, Error> {
        let (patient, actor, purpose) =
            (access.patient_id, access.principal.actor(), access.purpose);
        let category = category_to_pb(category);
        match access.break_glass {
            Some(reason) => {
                self.consent
                    .evaluate_break_glass(patient, actor, purpose, category, reason)
                    .await
            }
            None => {
                self.consent
                    .evaluate(patient, actor, purpose, category)
                    .await
            }
        }
    }

    /// Records a denial in the outbox (the answer is no even if that fails).
    async fn audit_denial(&self, access: &AccessEvent<'_>, decision: &Decision) {
        let event = access.decided(Outcome::Denied, decision);
        if let Err(e) = self.outbox.record(&event).await {
            tracing::warn!(error = %e.message, "a denial could not be audited");
        }
    }

    /// Asks consent; a denial is audited and returned as PERMISSION_DENIED
    /// with the reason.
    async fn decide(
        &self,
        access: &AccessEvent<'_>,
        category: Category,
    ) -> Result<Decision, Error> {
        let decision = self.evaluate(access, category).await?;
        if !decision.permitted {
            self.audit_denial(access, &decision).await;
            return Err(decision.denial());
        }
        Ok(decision)
    }

    /// The answer for a record that is not there: consent about the
    /// patient's general record first (whether a record exists is itself
    /// data), then NOT_FOUND.
    async fn absent(&self, access: &AccessEvent<'_>) -> Error {
        match self.decide(access, Category::General).await {
            Ok(_) => Error::not_found(ABSENT),
            Err(e) => e,
        }
    }

    /// Asks consent about an existing record. When its category is
    /// withheld, the caller gets what an absent record would give them.
    async fn decide_hidden(
        &self,
        access: &AccessEvent<'_>,
        category: Category,
    ) -> Result<Decision, Error> {
        let decision = self.evaluate(access, category).await?;
        if decision.permitted {
            return Ok(decision);
        }
        self.audit_denial(access, &decision).await;
        if category == Category::General {
            return Err(decision.denial());
        }
        let general = self.evaluate(access, Category::General).await?;
        Err(if general.permitted {
            Error::not_found(ABSENT)
        } else {
            general.denial()
        })
    }

    async fn audit_success(
        &self,
        access: &AccessEvent<'_>,
        decision: &Decision,
    ) -> Result<(), Error> {
        self.outbox
            .record(&access.decided(Outcome::Success, decision))
            .await
    }

    /// Stores a write and its audit event: in one transaction when the
    /// store shares the outbox's database, else the event first (an audited
    /// attempt may then have failed; an unaudited change never happens).
    async fn store_write(
        &self,
        mut write: Write,
        access: &AccessEvent<'_>,
        decision: &Decision,
    ) -> Result<(), Error> {
        let event = access.decided(Outcome::Success, decision);
        if self.store.audit_in_write() {
            write.audit = Some(AuditRow {
                event_id: event.event_id.clone(),
                payload: event.encode_to_vec(),
            });
        } else {
            self.outbox.record(&event).await?;
        }
        self.store.write(write).await?;
        self.outbox.wake();
        self.written.notify_waiters();
        Ok(())
    }

    /// Stores a new resource as version 1. With an idempotency key, a
    /// retry answers with the first result.
    pub async fn create(
        &self,
        principal: &Principal,
        patient: PatientId,
        incoming: Incoming,
        purpose: Purpose,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Record, Error> {
        self.outbox.admit()?;
        // A merged id's new records are filed under the patient standing
        // for it now.
        let patient = self
            .merges
            .family(&patient)
            .await?
            .into_iter()
            .next()
            .unwrap_or(patient);
        if let Some(key) = &idempotency
            && let Some(row) = self.store.idempotency(key.scoped()).await?
        {
            return self.replay(principal, &patient, key, row, purpose).await;
        }
        let id = RecordId::new();
        let resource_type = incoming.resource.resource_type().to_owned();
        let access = access(
            principal,
            &patient,
            Action::Create,
            purpose,
            &resource_type,
            id.as_str(),
        );
        let decision = self.decide(&access, incoming.category).await?;
        let meta = RecordMeta {
            id: id.clone(),
            patient_id: patient.clone(),
            resource_type: resource_type.clone(),
            version: 1,
            last_updated: now(),
            category: incoming.category,
            deleted: false,
        };
        let (write, json) = stamped(meta.clone(), &incoming.resource);
        let write = Write {
            idempotency: idempotency.as_ref().map(|key| IdempotencyRow {
                key: key.scoped().to_owned(),
                request_hash: key.request_hash().to_owned(),
                record_id: id.clone(),
                version: 1,
            }),
            ..write
        };
        match self.store_write(write, &access, &decision).await {
            Ok(()) => Ok(record(meta, json)),
            // The same key, sent again while the first was being stored.
            Err(e) if e.code == Code::AlreadyExists && idempotency.is_some() => {
                let Some(key) = &idempotency else {
                    return Err(e);
                };
                let row = self.store.idempotency(key.scoped()).await?.ok_or(e)?;
                self.replay(principal, &patient, key, row, purpose).await
            }
            Err(e) => Err(e),
        }
    }

    /// The first answer to an idempotent create, read again through consent.
    async fn replay(
        &self,
        principal: &Principal,
        patient: &PatientId,
        key: &IdempotencyKey,
        row: IdempotencyRow,
        purpose: Purpose,
    ) -> Result<Record, Error> {
        if row.request_hash != key.request_hash() {
            return Err(Error::invalid(
                "idempotency_key",
                "was already used for a different request",
            ));
        }
        let stored = self
            .store
            .version(patient, &row.record_id, row.version)
            .await?;
        self.read(principal, patient, &row.record_id, stored, (purpose, None))
            .await
    }

    /// Reads the current version (with break-glass when `break_glass`
    /// gives a reason).
    pub async fn get(
        &self,
        principal: &Principal,
        patient: PatientId,
        id: RecordId,
        purpose: Purpose,
        break_glass: Option<&str>,
    ) -> Result<Record, Error> {
        self.outbox.admit()?;
        let found = self.find_current(&patient, &id).await?;
        self.read(principal, &patient, &id, found, (purpose, break_glass))
            .await
    }

    /// Consent about the version's metadata, then (permitted, not deleted)
    /// the resource opened, the read audited, and the version returned.
    async fn read(
        &self,
        principal: &Principal,
        patient: &PatientId,
        id: &RecordId,
        found: Option<Stored>,
        (purpose, break_glass): (Purpose, Option<&str>),
    ) -> Result<Record, Error> {
        let resource_type = found
            .as_ref()
            .map(|s| s.meta.resource_type.clone())
            .unwrap_or_default();
        let mut access = access(
            principal,
            patient,
            Action::Read,
            purpose,
            &resource_type,
            id.as_str(),
        );
        access.break_glass = break_glass;
        let Some(stored) = found else {
            return Err(self.absent(&access).await);
        };
        let decision = self.decide_hidden(&access, stored.meta.category).await?;
        if stored.meta.deleted {
            return Err(Error::not_found(ABSENT));
        }
        let json = stored.body.open()?;
        self.audit_success(&access, &decision).await?;
        Ok(record(stored.meta, json))
    }

    /// The current version, checked for a change: there, not deleted,
    /// visible to the caller, and at the version they expect.
    async fn current_for_change(
        &self,
        access: &AccessEvent<'_>,
        current: Option<RecordMeta>,
        if_match: i64,
    ) -> Result<(RecordMeta, Decision), Error> {
        let Some(current) = current else {
            return Err(self.absent(access).await);
        };
        let decision = self.decide_hidden(access, current.category).await?;
        if current.deleted {
            return Err(Error::not_found(ABSENT));
        }
        if current.version != if_match {
            return Err(crate::store::stale(current.version));
        }
        Ok((current, decision))
    }

    /// Stores a new version if `if_match` is current. Consent is asked about
    /// the record as it is and, when the category changes, as it will be.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        principal: &Principal,
        patient: PatientId,
        id: RecordId,
        incoming: Incoming,
        purpose: Purpose,
        if_match: i64,
    ) -> Result<Record, Error> {
        self.outbox.admit()?;
        let resource_type = incoming.resource.resource_type().to_owned();
        let access = access(
            principal,
            &patient,
            Action::Update,
            purpose,
            &resource_type,
            id.as_str(),
        );
        let found = self.find_current(&patient, &id).await?.map(|s| s.meta);
        let (current, mut decision) = self.current_for_change(&access, found, if_match).await?;
        if current.resource_type != resource_type {
            return Err(Error::invalid(
                "resource_json.resourceType",
                format!(
                    "must stay `{}`: a record's resource type cannot change",
                    current.resource_type
                ),
            ));
        }
        if incoming.category != current.category {
            decision = self.decide(&access, incoming.category).await?;
        }
        let meta = RecordMeta {
            version: current.version + 1,
            last_updated: now(),
            category: incoming.category,
            ..current
        };
        let (write, json) = stamped(meta.clone(), &incoming.resource);
        self.store_write(write, &access, &decision).await?;
        Ok(record(meta, json))
    }

    /// Deletes a record by storing a tombstone version.
    pub async fn delete(
        &self,
        principal: &Principal,
        patient: PatientId,
        id: RecordId,
        purpose: Purpose,
        if_match: i64,
    ) -> Result<Record, Error> {
        self.outbox.admit()?;
        let found = self.find_current(&patient, &id).await?.map(|s| s.meta);
        let found_type = found
            .as_ref()
            .map(|m| m.resource_type.clone())
            .unwrap_or_default();
        let access = access(
            principal,
            &patient,
            Action::Delete,
            purpose,
            &found_type,
            id.as_str(),
        );
        let (current, decision) = self.current_for_change(&access, found, if_match).await?;
        let meta = RecordMeta {
            version: current.version + 1,
            last_updated: now(),
            deleted: true,
            ..current
        };
        let write = Write {
            meta: meta.clone(),
            body: Vec::new(),
            index: SearchIndex::default(),
            idempotency: None,
            audit: None,
        };
        self.store_write(write, &access, &decision).await?;
        Ok(record(meta, String::new()))
    }

    /// Which of `asked` (all when empty) consent permits, and the general
    /// denial if the general record is among those refused.
    async fn permitted_categories(
        &self,
        access: &AccessEvent<'_>,
        asked: &[Category],
    ) -> Result<(Vec<Category>, HashMap<Category, Decision>, Option<Error>), Error> {
        let asked: Vec<Category> = if asked.is_empty() {
            Category::ALL.to_vec()
        } else {
            asked.to_vec()
        };
        let mut permitted = Vec::new();
        let mut decisions = HashMap::new();
        let mut general_denial = None;
        for category in asked {
            let decision = self.evaluate(access, category).await?;
            if decision.permitted {
                permitted.push(category);
                decisions.insert(category, decision);
            } else if category == Category::General {
                self.audit_denial(access, &decision).await;
                general_denial = Some(decision.denial());
            }
        }
        Ok((permitted, decisions, general_denial))
    }

    /// One page of a record's versions, newest first; versions in a
    /// withheld category are left out.
    pub async fn history(
        &self,
        principal: &Principal,
        patient: PatientId,
        id: RecordId,
        purpose: Purpose,
        page_size: usize,
        cursor: &str,
    ) -> Result<Page, Error> {
        self.outbox.admit()?;
        let current = self.find_current(&patient, &id).await?;
        let resource_type = current
            .as_ref()
            .map(|s| s.meta.resource_type.clone())
            .unwrap_or_default();
        let access = access(
            principal,
            &patient,
            Action::Read,
            purpose,
            &resource_type,
            id.as_str(),
        );
        let Some(current) = current else {
            return Err(self.absent(&access).await);
        };
        let decision = self.decide_hidden(&access, current.meta.category).await?;
        let query = format!("history\0{}\0{}", patient.as_str(), id.as_str());
        let mut before = match self.cursors.open("page_token", cursor, query.as_bytes())? {
            Some(position) => Some(i64::from_be_bytes(position.try_into().map_err(|_| {
                Error::invalid("page_token", "is not a cursor this service issued")
            })?)),
            None => None,
        };
        let mut allowed: HashMap<Category, bool> = HashMap::from([(current.meta.category, true)]);
        let mut versions = Vec::new();
        // One more than a page, to know whether another page holds anything.
        'fill: loop {
            // Where the record is filed (a merged patient's old id, maybe).
            let batch = self
                .store
                .history(&current.meta.patient_id, &id, before, page_size + 1)
                .await?;
            let exhausted = batch.len() <= page_size;
            for stored in batch {
                before = Some(stored.meta.version);
                let category = stored.meta.category;
                let permitted = match allowed.get(&category) {
                    Some(p) => *p,
                    None => {
                        let p = self.evaluate(&access, category).await?.permitted;
                        allowed.insert(category, p);
                        p
                    }
                };
                if permitted {
                    versions.push(stored);
                    if versions.len() > page_size {
                        break 'fill;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let next = if versions.len() > page_size {
            versions.truncate(page_size);
            let last = versions.last().map_or(0, |s| s.meta.version);
            self.cursors.issue(query.as_bytes(), &last.to_be_bytes())
        } else {
            String::new()
        };
        let mut records = Vec::with_capacity(versions.len());
        for stored in versions {
            let json = stored.body.open()?;
            records.push(record(stored.meta, json));
        }
        self.audit_success(&access, &decision).await?;
        Ok(Page { records, next })
    }

    /// One page of a patient's current records matching `query`, over the
    /// categories consent permits. `digest` encodes everything that shapes
    /// the results, binding the cursor to this search.
    #[allow(clippy::too_many_arguments)]
    pub async fn search(
        &self,
        principal: &Principal,
        mut query: SearchQuery,
        (purpose, break_glass): (Purpose, Option<&str>),
        page_size: usize,
        cursor: &str,
        digest: &[u8],
    ) -> Result<Page, Error> {
        self.outbox.admit()?;
        let patient = query.patient_id.clone();
        let after = match self.cursors.open("page_token", cursor, digest)? {
            Some(position) => Some(sort_key_from(&position)?),
            None => None,
        };
        let mut access = access(principal, &patient, Action::Search, purpose, "", "");
        access.break_glass = break_glass;
        let (permitted, decisions, general_denial) = self
            .permitted_categories(&access, &query.categories)
            .await?;
        if permitted.is_empty() {
            return match general_denial {
                Some(denial) => Err(denial),
                None => Ok(Page {
                    records: Vec::new(),
                    next: String::new(),
                }),
            };
        }
        query.categories = permitted;
        let mut found = self
            .search_family(&query, after.as_ref(), page_size + 1)
            .await?;
        let next = if found.len() > page_size {
            found.truncate(page_size);
            found
                .last()
                .map(|f| self.cursors.issue(digest, &sort_key_bytes(&f.key)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut records = Vec::with_capacity(found.len());
        for hit in found {
            let json = hit.stored.body.open()?;
            records.push(record(hit.stored.meta, json));
        }
        // Each record seen is in the audit log before the page is answered.
        self.audit_each(
            principal,
            &patient,
            Action::Search,
            purpose,
            &decisions,
            &records,
        )
        .await?;
        Ok(Page { records, next })
    }
}

/// One change a watcher may see, and the cursor that resumes after it.
pub struct Watched {
    pub change_id: String,
    pub meta: RecordMeta,
}

/// Changes a watcher reads at a time.
const WATCH_PAGE: usize = 200;
/// How often a watcher looks for changes other replicas committed.
const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(250);
const WATCH_CURSOR: &[u8] = b"watch";

/// Records per page an export reads and audits at a time.
const EXPORT_PAGE: usize = 200;

impl Records {
    /// A patient's current records over the categories consent permits now,
    /// page by page into `sink` (each page audited before it is sent), until
    /// all are sent, the receiver is gone, or an error (sent last).
    pub async fn export(
        self: Arc<Self>,
        principal: Principal,
        patient: PatientId,
        purpose: Purpose,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Record, Error>>, Error> {
        self.outbox.admit()?;
        let access = access(&principal, &patient, Action::Export, purpose, "", "");
        let (permitted, decisions, general_denial) =
            self.permitted_categories(&access, &[]).await?;
        if permitted.is_empty() {
            return Err(general_denial.unwrap_or_else(|| Error::not_found(ABSENT)));
        }
        let (sink, receiver) = tokio::sync::mpsc::channel(EXPORT_PAGE);
        let query = SearchQuery {
            patient_id: patient.clone(),
            resource_types: Vec::new(),
            categories: permitted,
            date_from: None,
            date_to: None,
            updated_from: None,
            updated_to: None,
            codes: Vec::new(),
            fhir_categories: Vec::new(),
        };
        tokio::spawn(async move {
            let mut after = None;
            loop {
                let page = self
                    .export_page(&principal, &query, purpose, &decisions, after.as_ref())
                    .await;
                let (records, next) = match page {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = sink.send(Err(e)).await;
                        return;
                    }
                };
                for record in records {
                    if sink.send(Ok(record)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(key) => after = Some(key),
                    None => return,
                }
            }
        });
        Ok(receiver)
    }

    /// The change log from after `cursor` (the start when empty), then each
    /// change as it commits, filtered by consent for `principal`, until the
    /// receiver is gone or an error (sent last: the watcher resumes from the
    /// last change it received).
    pub fn watch(
        self: Arc<Self>,
        principal: Principal,
        purpose: Purpose,
        cursor: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Watched, Error>>, Error> {
        self.outbox.admit()?;
        let mut after = match self.cursors.open("after_change_id", cursor, WATCH_CURSOR)? {
            Some(position) => i64::from_be_bytes(position.try_into().map_err(|_| {
                Error::invalid("after_change_id", "is not a cursor this service issued")
            })?),
            None => 0,
        };
        let (sink, receiver) = tokio::sync::mpsc::channel(WATCH_PAGE);
        tokio::spawn(async move {
            loop {
                // Registered before reading, so a write in between still wakes us.
                let written = self.written.notified();
                let page = match self.store.changes(after, WATCH_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = sink.send(Err(e)).await;
                        return;
                    }
                };
                let full = page.len() == WATCH_PAGE;
                for change in page {
                    after = change.sequence;
                    let access = access(
                        &principal,
                        &change.meta.patient_id,
                        Action::Read,
                        purpose,
                        &change.meta.resource_type,
                        change.meta.id.as_str(),
                    );
                    let permitted = match self.evaluate(&access, change.meta.category).await {
                        Ok(decision) => decision.permitted,
                        // No decision, no change: the watcher resumes later.
                        Err(e) => {
                            let _ = sink.send(Err(e)).await;
                            return;
                        }
                    };
                    if !permitted {
                        continue;
                    }
                    let watched = Watched {
                        change_id: self.cursors.issue(WATCH_CURSOR, &after.to_be_bytes()),
                        meta: change.meta,
                    };
                    if sink.send(Ok(watched)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    () = written => {}
                    () = tokio::time::sleep(WATCH_POLL) => {}
                    () = sink.closed() => return,
                }
            }
        });
        Ok(receiver)
    }

    async fn export_page(
        &self,
        principal: &Principal,
        query: &SearchQuery,
        purpose: Purpose,
        decisions: &HashMap<Category, Decision>,
        after: Option<&SortKey>,
    ) -> Result<(Vec<Record>, Option<SortKey>), Error> {
        self.outbox.admit()?;
        let found = self.search_family(query, after, EXPORT_PAGE).await?;
        let next = (found.len() == EXPORT_PAGE)
            .then(|| found.last().map(|f| f.key.clone()))
            .flatten();
        let mut records = Vec::with_capacity(found.len());
        for hit in found {
            let json = hit.stored.body.open()?;
            records.push(record(hit.stored.meta, json));
        }
        self.audit_each(
            principal,
            &query.patient_id,
            Action::Export,
            purpose,
            decisions,
            &records,
        )
        .await?;
        Ok((records, next))
    }

    /// One audit event per category a page disclosed, naming every record
    /// in it (so the access report can say which), durable before the page
    /// is answered.
    async fn audit_each(
        &self,
        principal: &Principal,
        patient: &PatientId,
        action: Action,
        purpose: Purpose,
        decisions: &HashMap<Category, Decision>,
        records: &[Record],
    ) -> Result<(), Error> {
        let mut by_category: Vec<(Category, Vec<&Record>)> = Vec::new();
        for r in records {
            match by_category.iter_mut().find(|(c, _)| *c == r.category) {
                Some((_, rs)) => rs.push(r),
                None => by_category.push((r.category, vec![r])),
            }
        }
        let mut events = Vec::with_capacity(by_category.len());
        for (category, rs) in by_category {
            let Some(decision) = decisions.get(&category) else {
                continue;
            };
            let first_type = rs.first().map_or("", |r| r.resource_type.as_str());
            let one_type = rs.iter().all(|r| r.resource_type == first_type);
            let mut event = access(
                principal,
                patient,
                action,
                purpose,
                if one_type { first_type } else { "" },
                "",
            )
            .decided(Outcome::Success, decision);
            event.record_ids = rs.iter().map(|r| r.id.as_str().to_owned()).collect();
            events.push(event);
        }
        for result in futures::future::join_all(events.iter().map(|e| self.outbox.record(e))).await
        {
            result?;
        }
        Ok(())
    }
}

/// The version to store and the resource JSON it carries.
fn stamped(meta: RecordMeta, resource: &ValidResource) -> (Write, String) {
    let json = resource
        .clone()
        .stamp(&meta.id, meta.version, meta.last_updated);
    let index = crate::domain::extract(&meta.resource_type, resource.as_json());
    (
        Write {
            meta,
            body: json.clone().into_bytes(),
            index,
            idempotency: None,
            audit: None,
        },
        json,
    )
}

/// The time a version is stamped with, to the millisecond: what
/// `meta.lastUpdated` shows is exactly what is stored and compared.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now)
}

fn sort_key_bytes(key: &SortKey) -> Vec<u8> {
    sharedcare_kit::paging::time_id_position(key.at_micros, &key.record_id)
}

fn sort_key_from(position: &[u8]) -> Result<SortKey, Error> {
    let (at_micros, record_id) = sharedcare_kit::paging::read_time_id_position(position)
        .ok_or_else(|| Error::invalid("page_token", "is not a cursor this service issued"))?;
    Ok(SortKey {
        at_micros,
        record_id,
    })
}
