//! An [`ObjectStore`] decorator that counts GET requests and the bytes they
//! return. Tests use it to prove that a read was (or was not) served from
//! the cache; archive reads use it to count their GETs in the read path's
//! metrics. It forwards everything else unchanged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Counts the GETs that reach the wrapped store.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    metered: bool,
}

impl CountingStore {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            gets: AtomicU64::new(0),
            get_bytes: AtomicU64::new(0),
            metered: false,
        }
    }

    /// Wrap `inner`, also counting into the node's GET metrics
    /// (`sluice_object_gets_total`, `sluice_object_get_bytes_total`).
    pub fn metered(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            metered: true,
            ..Self::new(inner)
        }
    }

    /// GET requests (whole or ranged) issued so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// Bytes those GETs asked for (the length of each returned range).
    pub fn get_bytes(&self) -> u64 {
        self.get_bytes.load(Ordering::SeqCst)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.metered {
            crate::metrics::OBJECT_GETS.inc();
        }
        let result = self.inner.get_opts(location, options).await?;
        let bytes = result.range.end - result.range.start;
        self.get_bytes.fetch_add(bytes, Ordering::SeqCst);
        if self.metered {
            crate::metrics::OBJECT_GET_BYTES.inc_by(bytes);
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
