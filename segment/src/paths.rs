//! Object paths: the one place that names objects in the bucket, and parses
//! those names back.
//!
//! ```text
//! segments/<ulid>.seg                                     a flushed segment
//! archive/<topic>/partition=<p>/<first>-<last>.parquet     an archive file
//! archive/<topic>/partition=<p>/<first>-<last>.<ulid>.parquet
//!                                                         the same, written beside an
//!                                                         unpublished file at that path
//! ```
//!
//! Topic names contain no `/` (they are validated), so every path splits
//! unambiguously.

use std::fmt;

use object_store::path::Path;
use ulid::Ulid;

/// Where segment objects live.
pub const SEGMENTS_PREFIX: &str = "segments/";
/// Where archive files live.
pub const ARCHIVE_PREFIX: &str = "archive/";
/// Every prefix sluice writes objects under (what garbage collection lists).
pub const OBJECT_PREFIXES: [&str; 2] = [SEGMENTS_PREFIX, ARCHIVE_PREFIX];

/// The id of a segment object: a ULID, so names sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub Ulid);

impl SegmentId {
    /// A fresh id.
    pub fn generate() -> Self {
        SegmentId(Ulid::new())
    }

    /// The object path of this segment: `segments/<ulid>.seg`.
    pub fn path(&self) -> Path {
        Path::from(self.path_text())
    }

    /// [`SegmentId::path`] as text.
    pub fn path_text(&self) -> String {
        format!("{SEGMENTS_PREFIX}{}.seg", self.0)
    }

    /// Parse the text form (a ULID).
    pub fn parse(text: &str) -> Option<Self> {
        Ulid::from_string(text).ok().map(SegmentId)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An archive file's name: the offsets it holds, and the ULID that makes it
/// unique when it had to be written beside an unpublished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset in the file.
    pub first: i64,
    /// Last offset in the file (inclusive).
    pub last: i64,
    /// Set for a file written beside another at the plain path.
    pub unique: Option<Ulid>,
}

impl ArchiveFile {
    /// The file holding offsets `first..end` of a partition, at its plain path.
    pub fn new(topic: &str, partition: i32, first: i64, end: i64) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            first,
            last: end - 1,
            unique: None,
        }
    }

    /// The same file at a path no other writer uses.
    pub fn beside(&self) -> Self {
        Self {
            unique: Some(Ulid::new()),
            ..self.clone()
        }
    }

    /// The object path.
    pub fn path(&self) -> String {
        let Self {
            topic,
            partition,
            first,
            last,
            unique,
        } = self;
        match unique {
            None => format!("{ARCHIVE_PREFIX}{topic}/partition={partition}/{first}-{last}.parquet"),
            Some(ulid) => format!(
                "{ARCHIVE_PREFIX}{topic}/partition={partition}/{first}-{last}.{ulid}.parquet"
            ),
        }
    }
}

/// The directory of a topic's archive (a hive-partitioned Parquet dataset).
pub fn topic_archive_prefix(topic: &str) -> String {
    format!("{ARCHIVE_PREFIX}{topic}/")
}

/// The object that holds a run of offsets: an archive file whose path the
/// index entry records, else the segment the entry names (`None` when it
/// names neither).
pub fn run_object_path(segment: Option<Ulid>, archive_path: Option<&str>) -> Option<String> {
    match archive_path {
        Some(path) => Some(path.to_string()),
        None => segment.map(|id| SegmentId(id).path_text()),
    }
}

/// An object path sluice writes, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectPath {
    /// `segments/<ulid>.seg`.
    Segment(SegmentId),
    /// `archive/<topic>/partition=<p>/<first>-<last>[.<ulid>].parquet`.
    Archive(ArchiveFile),
}

fn canonical_i64(text: &str) -> Option<i64> {
    let value: i64 = text.parse().ok()?;
    (value >= 0 && value.to_string() == text).then_some(value)
}

/// Parse an object path; `None` for anything sluice does not write.
pub fn parse_object_path(path: &str) -> Option<ObjectPath> {
    if let Some(rest) = path.strip_prefix(SEGMENTS_PREFIX) {
        let id = SegmentId::parse(rest.strip_suffix(".seg")?)?;
        return (id.path_text() == path).then_some(ObjectPath::Segment(id));
    }
    let rest = path.strip_prefix(ARCHIVE_PREFIX)?;
    let (topic, rest) = rest.split_once('/')?;
    let (partition, file) = rest.split_once('/')?;
    let partition = i32::try_from(canonical_i64(partition.strip_prefix("partition=")?)?).ok()?;
    let stem = file.strip_suffix(".parquet")?;
    let (range, unique) = match stem.split_once('.') {
        Some((range, ulid)) => (range, Some(Ulid::from_string(ulid).ok()?)),
        None => (stem, None),
    };
    let (first, last) = range.split_once('-')?;
    let file = ArchiveFile {
        topic: topic.to_string(),
        partition,
        first: canonical_i64(first)?,
        last: canonical_i64(last)?,
        unique,
    };
    (!topic.is_empty() && file.path() == path).then_some(ObjectPath::Archive(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_paths_round_trip() {
        for _ in 0..100 {
            let id = SegmentId::generate();
            assert_eq!(id.path().as_ref(), id.path_text());
            assert_eq!(
                parse_object_path(&id.path_text()),
                Some(ObjectPath::Segment(id))
            );
            assert_eq!(SegmentId::parse(&id.to_string()), Some(id));
        }
    }

    #[test]
    fn archive_paths_round_trip() {
        let plain = ArchiveFile::new("orders", 3, 0, 30);
        assert_eq!(plain.path(), "archive/orders/partition=3/0-29.parquet");
        assert_eq!(
            parse_object_path(&plain.path()),
            Some(ObjectPath::Archive(plain.clone()))
        );
        let beside = plain.beside();
        assert!(beside
            .path()
            .starts_with("archive/orders/partition=3/0-29."));
        assert_ne!(beside.path(), plain.path());
        assert_eq!(
            parse_object_path(&beside.path()),
            Some(ObjectPath::Archive(beside.clone()))
        );
        assert!(plain.path().starts_with(&topic_archive_prefix("orders")));
        // a small deterministic property test over names and offsets
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let first = (x >> 20) as i64;
            let file = ArchiveFile::new(
                &format!("t.{}_x-{}", x % 97, x % 13),
                (x % 10_000) as i32,
                first,
                first + 1 + (x % 1_000_000) as i64,
            );
            assert_eq!(
                parse_object_path(&file.path()),
                Some(ObjectPath::Archive(file.clone()))
            );
        }
    }

    #[test]
    fn run_objects_are_segments_or_recorded_archive_paths() {
        let id = SegmentId::generate();
        assert_eq!(run_object_path(Some(id.0), None), Some(id.path_text()));
        assert_eq!(
            run_object_path(None, Some("archive/x")).as_deref(),
            Some("archive/x")
        );
        assert_eq!(run_object_path(None, None), None);
    }

    #[test]
    fn foreign_paths_do_not_parse() {
        for path in [
            "segments/nope.seg",
            "segments/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "segments/01ARZ3NDEKTSV4RRFFQ69G5FAV.seg.tmp",
            "archive/orders/0-1.parquet",
            "archive/orders/partition=x/0-1.parquet",
            "archive/orders/partition=01/0-1.parquet",
            "archive/orders/partition=1/0-1.csv",
            "archive/orders/partition=1/1.parquet",
            "archive/orders/partition=1/0-1.nope.parquet",
            "archive//partition=1/0-1.parquet",
            "archive/orders/partition=1/x/0-1.parquet",
            "other/thing",
        ] {
            assert_eq!(parse_object_path(path), None, "{path}");
        }
        assert_eq!(OBJECT_PREFIXES, ["segments/", "archive/"]);
    }
}
