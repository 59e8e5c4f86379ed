//! Producers that failed for good, replaced: librdkafka's fatal errors (an idempotent producer
//! that lost track of its sequence numbers cannot go on) end a producer, never the broker. A
//! [`Renewing`] producer asks the client after any error librdkafka reported and, if it failed
//! for good, makes a new one from the same configuration; the old one is purged and dropped on a
//! thread of its own ([`retire`]), or on the caller's when its reports must all be in before the
//! new producer's ([`Renewing::retiring_inline`]): its records are reported failed to their
//! context, whose owner decides what that means (publishers refused, route records written
//! again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ProducerContext, PurgeConfig, ThreadedProducer};

/// The pause after a replacement starts at this, doubles up to [`BACKOFF_MAX`], and is back to
/// it after [`QUIET`] without one.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(60);
/// How long a purged producer's reports are waited for.
const PURGE_WAIT: Duration = Duration::from_secs(60);

/// A producer context [`Renewing`] can use: its `error` sets [`Renewable::errored`].
pub(crate) trait Renewable: ProducerContext + Sized + 'static {
    /// Set when librdkafka reported an error (cleared when the producer is asked whether it
    /// failed for good).
    fn errored(&self) -> &AtomicBool;
    /// A context for a replacement producer, reporting where this one does.
    fn again(&self) -> Self;
}

/// A producer replaced by a new one when librdkafka reports a fatal error.
pub(crate) struct Renewing<C: Renewable> {
    producer: ThreadedProducer<C>,
    config: ClientConfig,
    /// Whose producer it is, and what becomes of the records a failed one held (for the log).
    whose: &'static str,
    held: &'static str,
    /// No replacement before this (a failed one is tried again then).
    retry_at: Option<Instant>,
    /// The pause after a replacement.
    backoff: Duration,
    last_renewed: Option<Instant>,
    /// Producers replaced so far.
    pub(crate) renewed: u64,
    /// The old producer is purged and flushed on the caller's thread (its reports all in
    /// before the new one's) instead of a thread of its own.
    inline: bool,
}

impl<C: Renewable> Renewing<C> {
    /// A producer from `config` reporting to `context`.
    pub(crate) fn new(
        config: ClientConfig,
        context: C,
        whose: &'static str,
        held: &'static str,
    ) -> Result<Self, KafkaError> {
        let producer = config.create_with_context(context)?;
        Ok(Self {
            producer,
            config,
            whose,
            held,
            retry_at: None,
            backoff: BACKOFF_MIN,
            last_renewed: None,
            renewed: 0,
            inline: false,
        })
    }

    /// Retires failed producers on the caller's thread, which waits (up to 5 s) until the old
    /// producer's records are all reported.
    pub(crate) fn retiring_inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// The producer in use.
    pub(crate) fn producer(&self) -> &ThreadedProducer<C> {
        &self.producer
    }

    /// An error waits to be looked at and no pause holds it back: the next
    /// [`Renewing::renew_if_failed`] asks the client (a thread about to sleep stays awake).
    pub(crate) fn due(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
            && self
                .producer
                .client()
                .context()
                .errored()
                .load(Ordering::Acquire)
    }

    /// Replaces the producer if it failed for good (call every pass; cheap unless librdkafka
    /// reported an error).
    pub(crate) fn renew_if_failed(&mut self) {
        let context = self.producer.client().context();
        if self.retry_at.is_some_and(|t| Instant::now() < t)
            || !context.errored().swap(false, Ordering::AcqRel)
        {
            return;
        }
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return;
        };
        let now = Instant::now();
        let (whose, held) = (self.whose, self.held);
        tracing::error!(error = %code, producer = whose, "Kafka producer failed for good ({reason}): a new one replaces it; {held}");
        let again = context.again();
        match self.config.create_with_context(again) {
            Ok(producer) => {
                let old = std::mem::replace(&mut self.producer, producer);
                if self.inline {
                    purge(&old);
                } else {
                    retire(old, whose);
                }
                self.renewed += 1;
                // A producer failing again soon after waits longer before the next one.
                if self
                    .last_renewed
                    .is_some_and(|t| now.duration_since(t) > QUIET)
                {
                    self.backoff = BACKOFF_MIN;
                }
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.last_renewed = Some(now);
                tracing::info!(
                    producer = whose,
                    "a new Kafka producer replaced the failed one"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, producer = whose, "cannot create a Kafka producer to replace the failed one; trying again in a second");
                self.producer
                    .client()
                    .context()
                    .errored()
                    .store(true, Ordering::Release);
                self.retry_at = Some(now + BACKOFF_MIN);
            }
        }
    }
}

/// Purges a producer that failed for good and drops it on a thread of its own (the purge's
/// reports, failed, reach its context; flushing and destroying it may take a while).
pub(crate) fn retire<C: ProducerContext + 'static>(old: ThreadedProducer<C>, whose: &str) {
    let retire = move || purge(&old);
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-retire".into())
        .spawn(retire)
    {
        tracing::error!(error = %e, producer = whose, "cannot start a thread to retire a failed Kafka producer: dropped here");
    }
}

/// Purges a producer's queue and in-flight records and waits for their reports (librdkafka
/// makes them at once, without Kafka; waited for up to [`PURGE_WAIT`], a warning every 5 s).
fn purge<C: ProducerContext + 'static>(old: &ThreadedProducer<C>) {
    old.purge(PurgeConfig::default().queue().inflight());
    let start = Instant::now();
    while old.flush(Duration::from_secs(5)).is_err() {
        let left = old.in_flight_count();
        if start.elapsed() >= PURGE_WAIT {
            tracing::error!(
                left,
                "a failed Kafka producer still has unreported records after a minute; dropped"
            );
            return;
        }
        tracing::warn!(left, "waiting for a failed Kafka producer's reports");
    }
}
