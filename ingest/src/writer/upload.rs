//! The upload stage: PUTs sealed segments with `PutMode::Create`, at most
//! `uploads_in_flight_max` at once, results kept in seal order.

use super::*;

pub(super) async fn upload(
    store: Arc<dyn ObjectStore>,
    cache: Option<BlockCache>,
    segment: Sealed,
) -> (Sealed, IngestResult<()>) {
    metrics::OBJECT_PUTS.inc();
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let payload = PutPayload::from_bytes(segment.object.clone());
    let result = store
        .put_opts(&segment.id.path(), payload, options)
        .await
        .map(|_| {
            // before the commit makes the segment visible to readers
            if let Some(cache) = &cache {
                cache.insert_object(segment.id, &segment.object);
            }
        })
        .map_err(|error| {
            metrics::OBJECT_PUT_FAILURES.inc();
            warn!(segment = %segment.id, %error, "segment upload failed");
            IngestError::from(error)
        });
    (segment, result)
}

pub(super) async fn upload_loop(
    config: WriterConfig,
    store: Arc<dyn ObjectStore>,
    cache: Option<BlockCache>,
    mut sealed: mpsc::Receiver<Sealed>,
    uploaded: mpsc::Sender<(Sealed, IngestResult<()>)>,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = sealed.recv(), if open && in_flight.len() < config.uploads_in_flight_max.max(1) => match next {
                Some(segment) => in_flight.push_back(upload(store.clone(), cache.clone(), segment)),
                None => open = false,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(mpsc::error::SendError((segment, _))) = uploaded.send(done).await {
                    fail_all(segment.waiters, &IngestError::ShuttingDown);
                }
            }
        }
    }
}
