//! Errors of the read path.

use sluice_metadata::model::ModelError;
use sluice_metadata::MetaError;
use sluice_segment::{BatchError, SegmentError};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name or id.
        topic: String,
        /// Partition asked for.
        partition: i32,
    },
    /// The offset is outside `[log start, high watermark]`.
    #[error("offset {offset} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: i64,
        /// First readable offset.
        log_start: i64,
        /// Next offset to be written.
        high_watermark: i64,
    },
    /// Stored bytes failed verification: never served.
    #[error("corrupt segment data in {segment}: {reason}")]
    Corrupt {
        /// Segment id.
        segment: String,
        /// What failed.
        reason: String,
    },
    /// The object store failed; retrying may help.
    #[error("object store unavailable: {0}")]
    Store(#[from] object_store::Error),
    /// The object store failed, reached through the read cache (which
    /// keeps only the message); retrying may help.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The model layer failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl FetchError {
    /// A corrupt-range error for `segment`.
    pub fn corrupt(segment: impl ToString, reason: impl ToString) -> Self {
        FetchError::Corrupt {
            segment: segment.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<(String, SegmentError)> for FetchError {
    fn from((segment, error): (String, SegmentError)) -> Self {
        FetchError::corrupt(&segment, error)
    }
}

impl From<(String, BatchError)> for FetchError {
    fn from((segment, error): (String, BatchError)) -> Self {
        FetchError::corrupt(&segment, error)
    }
}

/// Result alias of the read path.
pub type FetchResult<T> = Result<T, FetchError>;
