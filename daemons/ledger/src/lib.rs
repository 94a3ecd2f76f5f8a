//! Ledgers on logtank bookies, as BookKeeper's client writes and reads them (`../shared/reference/
//! bookkeeper.md` §3): the coordination layout ([`layout`]), ledger metadata ([`metadata`]), bookie cookies
//! ([`cookie`]), the one-time set-up of a cluster ([`admin`]), and the client ([`LedgerClient`]) the CLI and
//! the writer use.
//!
//! - [`LedgerClient::create`] picks `E` writable bookies (never a readonly one) and allocates an id.
//! - [`LedgerWriter`] pipelines adds: entry `e` goes to the `Qw` bookies from `e mod E` and is acknowledged,
//!   in order, once `Qa` of them stored it durably and every lower entry is acknowledged; every entry carries
//!   the last add confirmed (LAC). A failed bookie is replaced by a writable one outside the ensemble (a new
//!   fragment from the first unacknowledged entry, by compare-and-set on the metadata) and the unacknowledged
//!   entries are sent again; no acknowledged entry is ever lost or reordered. `close` settles the last entry.
//! - [`LedgerClient::open`] with recovery fences the last ensemble, finds the last entry any writer may have
//!   seen acknowledged, re-adds what is missing and closes the ledger; without recovery it reads up to the LAC
//!   ([`LedgerReader`], and `tail` for a ledger that still grows).
//!
//! Every network wait is bounded ([`ClientOptions`]); errors are [`LedgerError`]s naming what they concern.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bookie_client;
pub mod cookie;
mod error;
pub mod layout;
pub mod logs;
mod meta;
pub mod metadata;
mod reader;
mod recovery;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logtank_bookie_proto::{master_key, MasterKey, FRAME_BYTES_MAX_DEFAULT};
use logtank_coord::Coord;
use rand::seq::SliceRandom;

pub use error::LedgerError;
pub use layout::{Layout, DEFAULT_ROOT};
pub use metadata::{Fragment, LedgerMetadata, LedgerState};
pub use reader::LedgerReader;
pub use writer::{LedgerWriter, PendingAdd};

use crate::bookie_client::BookiePool;

/// The client's bounds and timeouts.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one add may wait for a bookie's answer before that bookie counts as failed.
    pub add_timeout: Duration,
    /// How long a read (or a fencing read) may wait for one bookie.
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    /// Adds a writer has in flight (sent, not yet acknowledged); more wait.
    pub adds_in_flight_max: usize,
    /// Requests in flight per bookie connection; below the bookie's own limit (1000 by default), so a busy
    /// client waits instead of being refused.
    pub requests_in_flight_max: usize,
    /// The largest response accepted (an entry and its headers).
    pub frame_bytes_max: usize,
    /// How often `tail` asks for a new LAC when it has read everything.
    pub tail_poll_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            add_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            adds_in_flight_max: 1000,
            requests_in_flight_max: 500,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            tail_poll_interval: Duration::from_millis(200),
        }
    }
}

/// How many times a compare-and-set on metadata is tried against concurrent changes before giving up.
pub(crate) const METADATA_CAS_ATTEMPTS_MAX: u32 = 10;

/// What a [`LedgerClient`] shares with its writers and readers.
#[derive(Debug)]
pub(crate) struct Inner {
    pub coord: Coord,
    pub layout: Layout,
    pub pool: BookiePool,
    pub options: ClientOptions,
    /// Ensemble changes made by this client's writers, for their owners' metrics.
    pub ensemble_changes: std::sync::atomic::AtomicU64,
}

/// A client of one ledgers root: cheap to clone.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    inner: Arc<Inner>,
}

impl LedgerClient {
    pub fn new(coord: Coord, layout: Layout, options: ClientOptions) -> LedgerClient {
        LedgerClient {
            inner: Arc::new(Inner {
                coord,
                layout,
                pool: BookiePool::new(options.clone()),
                options,
                ensemble_changes: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The coordination session the client uses (for the metadata of what it builds on ledgers).
    pub fn coord(&self) -> &Coord {
        &self.inner.coord
    }

    /// Bookies replaced in ledgers this client wrote, so far.
    pub fn ensemble_changes(&self) -> u64 {
        self.inner
            .ensemble_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The writable and the readonly bookies, as registered.
    pub async fn bookies(&self) -> Result<(Vec<String>, Vec<String>), LedgerError> {
        admin::list_bookies(&self.inner.coord.client(), &self.inner.layout).await
    }

    /// Creates a ledger on `ensemble_size` writable bookies chosen at random, and returns its writer.
    pub async fn create(
        &self,
        ensemble_size: usize,
        write_quorum: usize,
        ack_quorum: usize,
        password: &[u8],
        custom: BTreeMap<String, String>,
    ) -> Result<LedgerWriter, LedgerError> {
        let (mut writable, readonly) = self.bookies().await?;
        if writable.len() < ensemble_size {
            return Err(LedgerError::NotEnoughBookies {
                needed: ensemble_size,
                writable: writable.len(),
                readonly: readonly.len(),
            });
        }
        writable.shuffle(&mut rand::rng());
        writable.truncate(ensemble_size);
        let metadata = LedgerMetadata::new(writable, write_quorum, ack_quorum, custom, now_ms())?;
        let (ledger_id, version) = meta::create_ledger(&self.inner, &metadata).await?;
        log::info!(
            "created ledger {ledger_id} (E={ensemble_size} Qw={write_quorum} Qa={ack_quorum}) on {}",
            metadata.current_ensemble().join(", ")
        );
        Ok(LedgerWriter::start(
            self.inner.clone(),
            ledger_id,
            master_key(password),
            metadata,
            version,
        ))
    }

    /// Opens a ledger to read it. With `recovery`, an open ledger is fenced (its writer can add nothing
    /// more), its last entry settled and re-replicated, and it is closed; without, nothing changes and
    /// reads go up to the last add confirmed.
    pub async fn open(
        &self,
        ledger_id: u64,
        password: &[u8],
        recovery: bool,
    ) -> Result<LedgerReader, LedgerError> {
        let key: MasterKey = master_key(password);
        let (metadata, version) = meta::read_ledger(&self.inner, ledger_id).await?;
        let metadata = if recovery && !metadata.is_closed() {
            recovery::recover(&self.inner, ledger_id, key, metadata, version).await?
        } else {
            metadata
        };
        Ok(LedgerReader::new(self.inner.clone(), ledger_id, metadata))
    }

    /// The ledger's metadata as stored.
    pub async fn metadata(&self, ledger_id: u64) -> Result<LedgerMetadata, LedgerError> {
        Ok(meta::read_ledger(&self.inner, ledger_id).await?.0)
    }

    /// Every ledger id under the root, in order.
    pub async fn list(&self) -> Result<Vec<u64>, LedgerError> {
        admin::list_ledgers(&self.inner.coord.client(), &self.inner.layout).await
    }

    /// Deletes the ledger's metadata; the bookies reclaim its entries at their next garbage collection.
    pub async fn delete(&self, ledger_id: u64) -> Result<(), LedgerError> {
        meta::delete_ledger(&self.inner, ledger_id).await
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
