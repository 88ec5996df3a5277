//! Produces records of one type to one topic, keyed, encoded with the shared codec,
//! with many deliveries in flight and every failure reported to the caller.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::codec::{Codec, CodecError, Record};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create producer: {0}")]
    Create(#[source] KafkaError),
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("producer to {topic} went away before confirming a delivery")]
    Canceled { topic: String },
    #[error("flushing {topic} did not finish within {timeout:?}: {source}")]
    Flush {
        topic: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
}

/// Producer of `T` records to one topic.
pub struct Publisher<T: Record> {
    producer: FutureProducer,
    codec: Codec<T>,
    topic: String,
    in_flight: FuturesUnordered<DeliveryFuture>,
    buf: Vec<u8>,
    delivered: u64,
}

/// Deliveries awaited at once before the publisher waits for the oldest ones; bounds
/// memory while keeping librdkafka's batches full.
const MAX_IN_FLIGHT: usize = 50_000;

impl<T: Record> Publisher<T> {
    pub fn new(config: &ClientConfig, topic: String) -> Result<Self, PublishError> {
        let producer: FutureProducer = config.create().map_err(PublishError::Create)?;
        Ok(Self {
            producer,
            codec: Codec::new(),
            topic,
            in_flight: FuturesUnordered::new(),
            buf: Vec::with_capacity(512),
            delivered: 0,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records confirmed by the cluster so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Encodes and enqueues one record; returns once librdkafka holds it. A failed
    /// delivery of an earlier record is returned by a later call or by [`Self::flush`].
    pub async fn publish(&mut self, key: &str, record: &T, timestamp_ms: i64) -> Result<(), PublishError> {
        self.codec.encode_into(record, &mut self.buf)?;
        loop {
            let r = FutureRecord::to(&self.topic).key(key).payload(&self.buf).timestamp(timestamp_ms);
            match self.producer.send_result(r) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Backpressure: wait for the cluster to confirm something, then retry.
                    if !self.reap_one().await? {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err((source, _)) => return Err(PublishError::Delivery { topic: self.topic.clone(), source }),
            }
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.reap_one().await?;
        }
        // Collect what has completed already without waiting.
        while let Some(Some(result)) = futures::FutureExt::now_or_never(self.in_flight.next()) {
            self.account(result)?;
        }
        Ok(())
    }

    /// Waits for every enqueued record to be confirmed; returns the total delivered.
    pub async fn flush(&mut self, timeout: Duration) -> Result<u64, PublishError> {
        let waited = tokio::time::timeout(timeout, async {
            while self.reap_one().await? {}
            Ok::<_, PublishError>(())
        })
        .await;
        match waited {
            Ok(result) => result?,
            Err(_) => {
                return Err(PublishError::Flush {
                    topic: self.topic.clone(),
                    timeout,
                    source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                })
            }
        }
        self.producer.flush(Duration::from_secs(1)).map_err(|source| PublishError::Flush {
            topic: self.topic.clone(),
            timeout,
            source,
        })?;
        Ok(self.delivered)
    }

    /// Awaits one delivery; false when none is in flight.
    async fn reap_one(&mut self) -> Result<bool, PublishError> {
        match self.in_flight.next().await {
            Some(result) => {
                self.account(result)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn account(
        &mut self,
        result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
    ) -> Result<(), PublishError> {
        match result {
            Ok(Ok(_)) => {
                self.delivered += 1;
                Ok(())
            }
            Ok(Err((source, _))) => Err(PublishError::Delivery { topic: self.topic.clone(), source }),
            Err(_) => Err(PublishError::Canceled { topic: self.topic.clone() }),
        }
    }
}
