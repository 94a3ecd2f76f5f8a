//! [`FanOut`]: one batch to several writers at once, as IndexTank's API sent each batch to every writer
//! (`docs/replication.md`, "Fan-out"). The first `required` writers must acknowledge a batch for it to
//! count as sent; the others are optional: their failures are counted and reported, and they are connected
//! again for the next batch.
//!
//! What a client may assume after a partial failure: a batch `send_batch` returned `Ok` for is durable on
//! every required writer (as each one's `writer.ack` says); one it returned `Err` for may be on any subset of
//! them (each writer is all or nothing for a batch), so resending it is the way on (records are merged by
//! docid, a duplicate changes nothing).

use crate::client::{Client, ClientConfig, ClientError};
use crate::types::LogBatch;

/// The most writers one batch is sent to.
pub const FAN_OUT_WRITERS_MAX: usize = 16;

#[derive(Debug)]
struct Writer {
    addr: String,
    client: Option<Client>,
}

/// A batch an optional writer did not take.
#[derive(Debug)]
pub struct OptionalFailure {
    pub writer: String,
    pub error: ClientError,
}

/// Why a batch did not count as sent: a required writer did not acknowledge it.
#[derive(Debug, thiserror::Error)]
#[error("the required writer {writer} did not acknowledge the batch: {error}")]
pub struct RequiredFailure {
    pub writer: String,
    pub error: ClientError,
    /// Optional writers that failed too.
    pub optional: Vec<OptionalFailure>,
}

/// One batch to several writers; see the module documentation.
#[derive(Debug)]
pub struct FanOut {
    writers: Vec<Writer>,
    required: usize,
    config: ClientConfig,
    /// Batches an optional writer failed, per writer, since the start.
    pub optional_failures: Vec<u64>,
}

impl FanOut {
    /// Writers `addrs` (`host:port`), of which the first `required` are required.
    pub fn new(addrs: Vec<String>, required: usize, config: ClientConfig) -> Result<FanOut, String> {
        if addrs.is_empty() || addrs.len() > FAN_OUT_WRITERS_MAX {
            return Err(format!("1 to {FAN_OUT_WRITERS_MAX} writers, not {}", addrs.len()));
        }
        if required == 0 || required > addrs.len() {
            return Err(format!(
                "required must be 1 to {} (the writers given), not {required}",
                addrs.len()
            ));
        }
        let n = addrs.len();
        Ok(FanOut {
            writers: addrs
                .into_iter()
                .map(|addr| Writer { addr, client: None })
                .collect(),
            required,
            config,
            optional_failures: vec![0; n],
        })
    }

    /// Connects every writer now (a later batch connects again what failed): `Err` names the first
    /// required writer that cannot be reached; optional ones that cannot are returned.
    pub fn connect(&mut self) -> Result<Vec<OptionalFailure>, RequiredFailure> {
        let mut optional = Vec::new();
        for (i, w) in self.writers.iter_mut().enumerate() {
            if w.client.is_some() {
                continue;
            }
            match Client::connect(w.addr.as_str(), &self.config) {
                Ok(c) => w.client = Some(c),
                Err(error) if i < self.required => {
                    return Err(RequiredFailure {
                        writer: w.addr.clone(),
                        error,
                        optional,
                    })
                }
                Err(error) => optional.push(OptionalFailure {
                    writer: w.addr.clone(),
                    error,
                }),
            }
        }
        Ok(optional)
    }

    pub fn writers(&self) -> impl Iterator<Item = &str> {
        self.writers.iter().map(|w| w.addr.as_str())
    }

    /// Sends `batch` to every writer at once (one thread each) and returns once all have answered: `Ok`
    /// with the optional writers that failed, or the first required writer that failed.
    pub fn send_batch(&mut self, batch: &LogBatch) -> Result<Vec<OptionalFailure>, RequiredFailure> {
        let config = self.config.clone();
        let results: Vec<Result<(), ClientError>> = if self.writers.len() == 1 {
            vec![send_one(&mut self.writers[0], batch, &config)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .writers
                    .iter_mut()
                    .map(|w| {
                        let config = &config;
                        scope.spawn(move || send_one(w, batch, config))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(Err(ClientError::Closed)))
                    .collect()
            })
        };
        let mut optional = Vec::new();
        let mut required_failure = None;
        for (i, result) in results.into_iter().enumerate() {
            let Err(error) = result else { continue };
            let writer = self.writers[i].addr.clone();
            if i < self.required {
                required_failure.get_or_insert((writer, error));
            } else {
                self.optional_failures[i] += 1;
                optional.push(OptionalFailure { writer, error });
            }
        }
        match required_failure {
            Some((writer, error)) => Err(RequiredFailure {
                writer,
                error,
                optional,
            }),
            None => Ok(optional),
        }
    }
}

/// Sends to one writer, connecting first when there is no usable connection (a failed one is dropped).
fn send_one(w: &mut Writer, batch: &LogBatch, config: &ClientConfig) -> Result<(), ClientError> {
    let client = match &mut w.client {
        Some(c) => c,
        None => w.client.insert(Client::connect(w.addr.as_str(), config)?),
    };
    let result = client.send_batch(batch);
    if matches!(result, Err(ref e) if !matches!(e, ClientError::Application { .. })) {
        w.client = None;
    }
    result
}
