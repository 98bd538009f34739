//! Object paths: the one place that names objects in the bucket.

use std::fmt;

use object_store::path::Path;
use ulid::Ulid;

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
        Path::from(format!("segments/{}.seg", self.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_round_trips_through_text() {
        let id = SegmentId::generate();
        let path = id.path();
        let text = path
            .as_ref()
            .strip_prefix("segments/")
            .and_then(|s| s.strip_suffix(".seg"));
        assert_eq!(text.and_then(SegmentId::parse), Some(id));
    }
}
