//! Errors of the front doors and the write path, in two layers: the detailed
//! [`IngestError`] and the coarse [`ErrorKind`] that says whether to retry
//! and maps once to HTTP statuses and Kafka error codes.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use sluice_fetch::FetchError;
use sluice_metadata::model::ModelError;
use sluice_metadata::producers::SequenceError;
use sluice_metadata::MetaError;

use crate::group::GroupError;

/// What kind of failure, as a client needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or invalid; do not retry it unchanged.
    InvalidInput,
    /// Client data failed verification (a batch's framing or CRC).
    CorruptInput,
    /// The topic or partition does not exist.
    NotFound,
    /// A topic name Kafka does not allow (empty, too long, illegal
    /// characters); permanent.
    InvalidTopic,
    /// The thing to create exists already.
    AlreadyExists,
    /// A record or request is larger than allowed.
    TooLarge,
    /// An offset outside the partition's range.
    OutOfRange,
    /// A dependency (object store, metadata store) failed or the node is
    /// shutting down; retrying later may succeed.
    Unavailable,
    /// Stored data failed verification; it is never served.
    Corrupt,
    /// An idempotent producer's batch does not follow its last one.
    OutOfOrderSequence,
    /// An idempotent producer was fenced by a newer epoch.
    ProducerFenced,
    /// A record breaks its topic's rules (a keyless record on a compacted
    /// topic).
    InvalidRecord,
    /// A record's timestamp is outside its topic's bounds.
    InvalidTimestamp,
    /// The principal may not do this to this topic.
    TopicDenied,
    /// The principal may not do this to this group.
    GroupDenied,
    /// The principal may not do this to the cluster.
    ClusterDenied,
}

impl ErrorKind {
    /// The HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput
            | ErrorKind::CorruptInput
            | ErrorKind::InvalidTopic
            | ErrorKind::InvalidRecord
            | ErrorKind::InvalidTimestamp => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::OutOfRange => 416,
            ErrorKind::Unavailable => 503,
            ErrorKind::Corrupt => 500,
            ErrorKind::OutOfOrderSequence | ErrorKind::ProducerFenced => 409,
            ErrorKind::TopicDenied | ErrorKind::GroupDenied | ErrorKind::ClusterDenied => 403,
        }
    }

    /// The Kafka error code for this kind.
    pub fn kafka_error_code(self) -> i16 {
        self.kafka_error().code()
    }

    /// The Kafka error for this kind (the one place the listener maps
    /// errors to the wire).
    pub fn kafka_error(self) -> ResponseError {
        match self {
            ErrorKind::InvalidInput => ResponseError::InvalidRequest,
            ErrorKind::CorruptInput => ResponseError::CorruptMessage,
            ErrorKind::NotFound => ResponseError::UnknownTopicOrPartition,
            ErrorKind::InvalidTopic => ResponseError::InvalidTopicException,
            ErrorKind::AlreadyExists => ResponseError::TopicAlreadyExists,
            ErrorKind::TooLarge => ResponseError::MessageTooLarge,
            ErrorKind::OutOfRange => ResponseError::OffsetOutOfRange,
            // retriable: clients back off, refresh metadata and try again
            ErrorKind::Unavailable => ResponseError::KafkaStorageError,
            ErrorKind::Corrupt => ResponseError::UnknownServerError,
            ErrorKind::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
            ErrorKind::ProducerFenced => ResponseError::InvalidProducerEpoch,
            ErrorKind::InvalidRecord => ResponseError::InvalidRecord,
            ErrorKind::InvalidTimestamp => ResponseError::InvalidTimestamp,
            ErrorKind::TopicDenied => ResponseError::TopicAuthorizationFailed,
            ErrorKind::GroupDenied => ResponseError::GroupAuthorizationFailed,
            ErrorKind::ClusterDenied => ResponseError::ClusterAuthorizationFailed,
        }
    }

    /// Whether a retry of the same request may succeed.
    pub fn is_retriable(self) -> bool {
        self == ErrorKind::Unavailable
    }
}

impl From<GroupError> for ResponseError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            GroupError::NotCoordinator => ResponseError::NotCoordinator,
            GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
            GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
            GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
            GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
            GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
            GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
            GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
            GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        }
    }
}

/// The cause of a dependency failure, kept whole (shared by every request a
/// failed flush answers, hence behind an `Arc`).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A failure of the write path or a front door.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: i32,
    },
    /// The name is not a legal topic name.
    #[error("{0}")]
    InvalidTopic(String),
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Records broke their topic's rules (see [`crate::rules`]): the batch
    /// run is refused whole, naming each record by its index in its batch.
    #[error("{message}")]
    RecordsRefused {
        /// Refused for timestamps (else for content).
        timestamp: bool,
        /// (index in batch, reason) of each refused record.
        records: Vec<(i32, String)>,
        /// Summary for the client.
        message: String,
    },
    /// Produced batches failed validation (framing, magic, CRC).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// Too large.
    #[error("{0}")]
    TooLarge(String),
    /// Offset out of range.
    #[error("{0}")]
    OutOfRange(String),
    /// The object store failed.
    #[error("object store unavailable: {0}")]
    Store(#[source] Cause),
    /// The metadata store failed.
    #[error("metadata store unavailable: {0}")]
    Meta(#[source] Cause),
    /// A commit lost its compare-and-swap this many times in a row.
    #[error("commit lost {0} compare-and-swap races in a row")]
    CommitContention(u32),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Stored data is corrupt.
    #[error("{0}")]
    Corrupt(String),
    /// An idempotent producer's batch failed its sequence check.
    #[error(transparent)]
    Sequence(#[from] sluice_metadata::producers::SequenceError),
    /// An idempotent batch failed its sequence check against the head it
    /// was about to be committed on (a batch before it failed, or another
    /// node stored it); it was not stored and a retry gets a precise answer.
    #[error("{0}; retry")]
    SequenceRecheck(String),
    /// Refused by the authorizer.
    #[error("{principal} may not {operation} {resource}")]
    Denied {
        /// Who asked.
        principal: String,
        /// What for.
        operation: sluice_metadata::acls::Operation,
        /// On what (`topic "orders"`, `group "g"`, `the cluster`).
        resource: String,
        /// The kind: which Kafka error it is.
        kind: ErrorKind,
    },
}

/// Result alias of the write path.
pub type IngestResult<T> = Result<T, IngestError>;

impl IngestError {
    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::UnknownTopic(_) | IngestError::UnknownPartition { .. } => {
                ErrorKind::NotFound
            }
            IngestError::InvalidTopic(_) => ErrorKind::InvalidTopic,
            IngestError::TopicExists(_) => ErrorKind::AlreadyExists,
            IngestError::Invalid(_) => ErrorKind::InvalidInput,
            IngestError::CorruptBatch(_) => ErrorKind::CorruptInput,
            IngestError::RecordsRefused { timestamp, .. } => {
                if *timestamp {
                    ErrorKind::InvalidTimestamp
                } else {
                    ErrorKind::InvalidRecord
                }
            }
            IngestError::TooLarge(_) => ErrorKind::TooLarge,
            IngestError::OutOfRange(_) => ErrorKind::OutOfRange,
            IngestError::Store(_)
            | IngestError::Meta(_)
            | IngestError::CommitContention(_)
            | IngestError::ShuttingDown => ErrorKind::Unavailable,
            IngestError::Corrupt(_) => ErrorKind::Corrupt,
            IngestError::Sequence(error) => match error {
                SequenceError::StaleEpoch { .. } => ErrorKind::ProducerFenced,
                SequenceError::OutOfOrder { .. } | SequenceError::Duplicate { .. } => {
                    ErrorKind::OutOfOrderSequence
                }
            },
            IngestError::SequenceRecheck(_) => ErrorKind::Unavailable,
            IngestError::Denied { kind, .. } => *kind,
        }
    }
}

impl From<MetaError> for IngestError {
    fn from(error: MetaError) -> Self {
        match error {
            MetaError::Invalid(reason) => IngestError::Invalid(reason),
            MetaError::Corrupt { .. } => IngestError::Corrupt(error.to_string()),
            other => IngestError::Meta(Arc::new(other)),
        }
    }
}

impl From<ModelError> for IngestError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Meta(meta) => meta.into(),
            ModelError::TopicExists(name) => IngestError::TopicExists(name),
            ModelError::UnknownTopic(name) => IngestError::UnknownTopic(name),
            ModelError::Invalid(reason) => IngestError::Invalid(reason),
            ModelError::OutOfRange(reason) => IngestError::OutOfRange(reason),
            ModelError::Concurrent(_) | ModelError::Collected(_) => {
                IngestError::Meta(Arc::new(error))
            }
        }
    }
}

impl From<object_store::Error> for IngestError {
    fn from(error: object_store::Error) -> Self {
        IngestError::Store(Arc::new(error))
    }
}

impl From<FetchError> for IngestError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::UnknownTopic(name) => IngestError::UnknownTopic(name),
            FetchError::UnknownPartition { topic, partition } => {
                IngestError::UnknownPartition { topic, partition }
            }
            FetchError::OffsetOutOfRange { .. } => IngestError::OutOfRange(error.to_string()),
            FetchError::Corrupt { .. } => IngestError::Corrupt(error.to_string()),
            FetchError::Store(store) => store.into(),
            FetchError::Unavailable(_) => IngestError::Store(Arc::new(error)),
            FetchError::Meta(meta) => meta.into(),
            FetchError::Model(model) => model.into(),
        }
    }
}
