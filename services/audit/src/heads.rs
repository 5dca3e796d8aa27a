//! Signed tree heads: the log's current size and root, signed as a C2SP
//! checkpoint, published on a cadence (when the log has grown) and on
//! demand.

use std::{
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use sharedcare_kit::Error;

use crate::{
    domain::checkpoint::{LogSigner, SignedHead},
    store::{AuditLogStore, Proofs},
};

pub struct TreeHeads {
    store: Arc<dyn AuditLogStore>,
    signer: LogSigner,
    latest: RwLock<Option<SignedHead>>,
}

impl TreeHeads {
    pub fn new(store: Arc<dyn AuditLogStore>, signer: LogSigner) -> Arc<Self> {
        Arc::new(TreeHeads {
            store,
            signer,
            latest: RwLock::new(None),
        })
    }

    /// Signs the tree as it is now and publishes it.
    pub async fn publish(&self) -> Result<SignedHead, Error> {
        let size = self.store.tree_size().await?;
        let root = Proofs(self.store.as_ref()).root(size).await?;
        let signed = self.signer.sign(size, root);
        if let Ok(mut latest) = self.latest.write() {
            // Never publish an older head over a newer one (two racing calls).
            if latest.as_ref().is_none_or(|l| l.head.size <= size) {
                *latest = Some(signed.clone());
            }
        }
        Ok(signed)
    }

    /// The head last published (the first call publishes one).
    pub async fn latest(&self) -> Result<SignedHead, Error> {
        let cached = self.latest.read().ok().and_then(|l| l.clone());
        match cached {
            Some(head) => Ok(head),
            None => self.publish().await,
        }
    }

    /// Publishes a new head every `interval` while the log grows, until the
    /// last `Arc` of `self` is dropped.
    pub fn publish_every(self: &Arc<Self>, interval: Duration) {
        let heads: Weak<TreeHeads> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(heads) = heads.upgrade() else {
                    return;
                };
                let published = heads
                    .latest
                    .read()
                    .ok()
                    .and_then(|l| l.as_ref().map(|h| h.head.size));
                match heads.store.tree_size().await {
                    Ok(size) if Some(size) == published => {}
                    Ok(_) => {
                        if let Err(e) = heads.publish().await {
                            tracing::warn!(error = %e, "publishing a tree head failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the tree size failed"),
                }
            }
        });
    }
}
