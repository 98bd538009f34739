//! InitProducerId: hands idempotent producers their producer id and epoch.
//!
//! Ids come from the cluster's `producer-ids` counter in the metadata store
//! (one compare-and-swap increment per call; a producer calls this once
//! per session), with epoch 0. A request naming its current producer id and
//! epoch (KIP-360, sent after a producer lost track of its sequences) keeps
//! the id and gets the next epoch, which fences batches of the old epoch;
//! when the epoch is exhausted a fresh id is handed out instead.
//!
//! Transactions are not supported: a request with a transactional id gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which Kafka clients report as a
//! fatal error instead of retrying.

use sluice_metadata::acls::{Operation, ResourceType};

use crate::access;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_metadata::model::Catalog;
use tracing::{debug, warn};

use super::KafkaContext;
use crate::error::IngestError;

/// Answer an InitProducerId request.
pub async fn handle(
    context: &KafkaContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    // IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679)
    let may_write = access::current()
        .is_none_or(|access| access.allows_any(Operation::Write, ResourceType::Topic));
    if !may_write {
        if let Err(denied) = access::cluster(Operation::IdempotentWrite) {
            return InitProducerIdResponse::default()
                .with_error_code(denied.kind().kafka_error_code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
    }
    answer(&context.catalog, request).await
}

/// The answer to `request`, allocating from `catalog`'s counter.
async fn answer(catalog: &Catalog, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // (an empty id is taken as none, as the codec's default is "")
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.0.is_empty())
    {
        debug!(transactional_id = %id.0, "refusing a transactional producer");
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let current = request.producer_id.0;
    let epoch = request.producer_epoch;
    if current >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        return response
            .with_producer_id(ProducerId(current))
            .with_producer_epoch(epoch + 1);
    }
    match catalog.allocate_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            warn!(%error, "allocating a producer id failed");
            let code = IngestError::from(error).kind().kafka_error_code();
            response.with_error_code(code)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::TransactionalId;
    use kafka_protocol::protocol::StrBytes;

    use std::sync::Arc;

    use sluice_metadata::embedded::EmbeddedStore;

    use super::*;

    #[tokio::test]
    async fn ids_are_fresh_epochs_bump_and_transactions_are_refused() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let fresh = || {
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        let first = answer(&catalog, fresh()).await;
        let second = answer(&catalog, fresh()).await;
        assert_eq!(first.error_code, 0);
        assert_eq!(first.producer_epoch, 0);
        assert_ne!(first.producer_id, second.producer_id);
        let bumped = answer(
            &catalog,
            InitProducerIdRequest::default()
                .with_producer_id(first.producer_id)
                .with_producer_epoch(4),
        )
        .await;
        assert_eq!(
            (bumped.producer_id, bumped.producer_epoch),
            (first.producer_id, 5)
        );
        let exhausted = answer(
            &catalog,
            InitProducerIdRequest::default()
                .with_producer_id(first.producer_id)
                .with_producer_epoch(i16::MAX - 1),
        )
        .await;
        assert_eq!(exhausted.producer_epoch, 0);
        assert_ne!(exhausted.producer_id, first.producer_id);
        let transactional = answer(
            &catalog,
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
        )
        .await;
        assert_eq!(
            transactional.error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
        assert_eq!(transactional.producer_id, ProducerId(-1));
    }
}
