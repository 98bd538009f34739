//! sluice's read path.
//!
//! [`Reader`] turns (topic, partition, offset) into
//! byte-range reads of segment objects, verifies each range's checksum and
//! patches the base offsets that were assigned at commit. Ranges are read
//! through the node's [`BlockCache`] (foyer, memory + disk) when it has
//! one, so repeated and tail reads cost no object-store GET. Long-polls wait on
//! per-partition high-watermark notifications, never on timers.

pub mod archive;
pub mod cache;
pub mod counting;
pub mod error;
pub mod metrics;
pub mod peer;
pub mod reader;

pub use cache::{join_parts, BlockCache, CacheConfig, CacheError};
pub use counting::CountingStore;
pub use error::{FetchError, FetchResult};
pub use peer::{PeerConfig, Peers};
pub use reader::{ReadChunk, Reader};
