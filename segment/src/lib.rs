//! sluice's data-plane format, shared by every writer and reader.
//!
//! A flush of a node's buffer becomes one immutable *segment object*
//! (`segments/<ulid>.seg`): a header, the Kafka RecordBatch v2 bytes of every
//! partition it holds grouped by partition, and a footer that indexes each
//! partition's byte range with its checksum and counts. Batches are stored
//! with base offset 0; offsets are assigned at commit and patched on read.
//! Object paths and store construction live here too, so that writers and
//! readers cannot drift.

pub mod archive;
pub mod batch;
pub mod format;
pub mod paths;
pub mod served;
pub mod store;

pub use batch::{BatchError, BatchSummary, NewRecord};
pub use format::{ChunkMeta, SegmentBuilder, SegmentError, SegmentFooter};
pub use paths::SegmentId;
