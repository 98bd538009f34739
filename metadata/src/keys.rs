//! Every metadata key sluice reads or writes, built and parsed here and
//! nowhere else. A cluster's keys all live under `/sluice/<cluster>/`:
//!
//! ```text
//! cluster                                  cluster id (created once)
//! node-id-counter                          last allocated node id
//! producer-ids                             last allocated producer id
//! node-secret                              the credential nodes present to each other
//! controller                               the elected controller (on its lease)
//! topics/<name>                            topic record: id, partitions, configs
//! heads/<topic-id>/<p>                     partition head: next offset, log start, producers
//! index/<topic-id>/<p>/<base:020>          index entry: where a run of offsets is stored
//! nodes/<node-id>                          a live node (on its lease)
//! groups/<group>/coordinator               the group's coordinator (on its lease)
//! groups/<group>/state                     the group's generation, members, assignment
//! offsets/<group>/<topic>/<p>              a committed offset
//! compaction/jobs/<topic-id>/<p>           a planned compaction job
//! compaction/claims/<topic-id>/<p>         a worker's claim of that job (on its lease)
//! gc/<object path>                         an object GC found unreferenced, and when
//! users/<name>/<mechanism>                 a user's salted SCRAM credential
//! acls/<binding, hex>                      an ACL binding
//! tokens/<sha-256, hex>                    an HTTP bearer token's principal
//! quotas/<entity, hex>                     a user's or client id's quotas
//! ```
//!
//! Index keys carry the base offset zero-padded to 20 digits so that key
//! order is offset order. Topic names and group ids never contain `/`
//! (both are validated), so every key splits unambiguously.

/// The key an etcd connection reads to prove it works (outside every
/// cluster's namespace; it is never written).
pub const CONNECT_PROBE: &str = "/sluice-connect-probe";

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// A leaf of a group's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLeaf {
    /// `groups/<group>/coordinator`.
    Coordinator,
    /// `groups/<group>/state`.
    State,
}

impl GroupLeaf {
    fn name(self) -> &'static str {
        match self {
            GroupLeaf::Coordinator => "coordinator",
            GroupLeaf::State => "state",
        }
    }
}

/// A key of the cluster's namespace, parsed by [`Keys::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'k> {
    /// `cluster`.
    ClusterId,
    /// `node-id-counter`.
    NodeIdCounter,
    /// `producer-ids`.
    ProducerIdCounter,
    /// `controller`.
    Controller,
    /// `node-secret`.
    NodeSecret,
    /// `topics/<name>`.
    Topic {
        /// Topic name.
        name: &'k str,
    },
    /// `heads/<topic-id>/<p>`.
    Head {
        /// Topic id.
        topic_id: &'k str,
        /// Partition.
        partition: i32,
    },
    /// `index/<topic-id>/<p>/<base>`.
    Index {
        /// Topic id.
        topic_id: &'k str,
        /// Partition.
        partition: i32,
        /// First offset of the run.
        base_offset: i64,
    },
    /// `nodes/<id>`.
    Node {
        /// Node id.
        node_id: i32,
    },
    /// `groups/<group>/<leaf>`.
    Group {
        /// Group id.
        group: &'k str,
        /// Which of the group's keys.
        leaf: GroupLeaf,
    },
    /// `offsets/<group>/<topic>/<p>`.
    Offset {
        /// Group id.
        group: &'k str,
        /// Topic name.
        topic: &'k str,
        /// Partition.
        partition: i32,
    },
    /// `compaction/jobs/<topic-id>/<p>`.
    CompactionJob {
        /// Topic id.
        topic_id: &'k str,
        /// Partition.
        partition: i32,
    },
    /// `compaction/claims/<topic-id>/<p>`.
    CompactionClaim {
        /// Topic id.
        topic_id: &'k str,
        /// Partition.
        partition: i32,
    },
    /// `gc/<object path>`.
    GcMark {
        /// The object's path in the store.
        object: &'k str,
    },
    /// `acls/<binding>`.
    Acl {
        /// The binding's name (its fields, hex-encoded).
        name: &'k str,
    },
    /// `quotas/<entity>`.
    Quota {
        /// The entity, hex-encoded.
        entity: &'k str,
    },
    /// `tokens/<digest>`.
    Token {
        /// The SHA-256 of the token, hex.
        digest: &'k str,
    },
    /// `users/<name>/<mechanism>`.
    UserCredential {
        /// User name.
        name: &'k str,
        /// SASL mechanism (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
        mechanism: &'k str,
    },
}

fn partition_of(text: &str) -> Option<i32> {
    // canonical decimal only, so that parse(build(x)) == x and nothing else parses
    let partition: i32 = text.parse().ok()?;
    (partition >= 0 && partition.to_string() == text).then_some(partition)
}

fn topic_partition(rest: &str) -> Option<(&str, i32)> {
    let (topic_id, partition) = rest.split_once('/')?;
    if topic_id.is_empty() {
        return None;
    }
    Some((topic_id, partition_of(partition)?))
}

impl Keys {
    /// The keys of `cluster`: `/sluice/<cluster>/…`.
    pub fn new(cluster: &str) -> Self {
        Self {
            root: format!("/sluice/{cluster}/"),
        }
    }

    /// The prefix of every key of the cluster (what the cluster view watches).
    pub fn root(&self) -> &str {
        &self.root
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.root)
    }

    /// `cluster`: the cluster id.
    pub fn cluster_id(&self) -> String {
        self.key(format_args!("cluster"))
    }

    /// `node-id-counter`: the last node id allocated.
    pub fn node_id_counter(&self) -> String {
        self.key(format_args!("node-id-counter"))
    }

    /// `producer-ids`: the last producer id allocated.
    pub fn producer_id_counter(&self) -> String {
        self.key(format_args!("producer-ids"))
    }

    /// `node-secret`: the credential nodes present to each other.
    pub fn node_secret(&self) -> String {
        self.key(format_args!("node-secret"))
    }

    /// `controller`: the controller election.
    pub fn controller(&self) -> String {
        self.key(format_args!("controller"))
    }

    /// Prefix of every topic record.
    pub fn topics(&self) -> String {
        self.key(format_args!("topics/"))
    }

    /// One topic's record.
    pub fn topic(&self, name: &str) -> String {
        self.key(format_args!("topics/{name}"))
    }

    /// Prefix of every partition head.
    pub fn heads(&self) -> String {
        self.key(format_args!("heads/"))
    }

    /// Prefix of one topic's partition heads.
    pub fn topic_heads(&self, topic_id: &str) -> String {
        self.key(format_args!("heads/{topic_id}/"))
    }

    /// One partition's head.
    pub fn head(&self, topic_id: &str, partition: i32) -> String {
        self.key(format_args!("heads/{topic_id}/{partition}"))
    }

    /// Prefix of the whole offset index.
    pub fn index(&self) -> String {
        self.key(format_args!("index/"))
    }

    /// Prefix of one topic's index entries.
    pub fn topic_index(&self, topic_id: &str) -> String {
        self.key(format_args!("index/{topic_id}/"))
    }

    /// Prefix of one partition's index entries.
    pub fn partition_index(&self, topic_id: &str, partition: i32) -> String {
        self.key(format_args!("index/{topic_id}/{partition}/"))
    }

    /// One index entry.
    pub fn index_entry(&self, topic_id: &str, partition: i32, base_offset: i64) -> String {
        self.key(format_args!(
            "index/{topic_id}/{partition}/{base_offset:020}"
        ))
    }

    /// Prefix of every node registration.
    pub fn nodes(&self) -> String {
        self.key(format_args!("nodes/"))
    }

    /// One node's registration.
    pub fn node(&self, node_id: i32) -> String {
        self.key(format_args!("nodes/{node_id}"))
    }

    /// Prefix of every group's keys.
    pub fn groups(&self) -> String {
        self.key(format_args!("groups/"))
    }

    /// One of a group's keys.
    pub fn group(&self, group: &str, leaf: GroupLeaf) -> String {
        self.key(format_args!("groups/{group}/{}", leaf.name()))
    }

    /// Prefix of every committed offset.
    pub fn offsets(&self) -> String {
        self.key(format_args!("offsets/"))
    }

    /// Prefix of one group's committed offsets.
    pub fn group_offsets(&self, group: &str) -> String {
        self.key(format_args!("offsets/{group}/"))
    }

    /// One committed offset.
    pub fn offset(&self, group: &str, topic: &str, partition: i32) -> String {
        self.key(format_args!("offsets/{group}/{topic}/{partition}"))
    }

    /// Prefix of every compaction job.
    pub fn compaction_jobs(&self) -> String {
        self.key(format_args!("compaction/jobs/"))
    }

    /// A partition's compaction job.
    pub fn compaction_job(&self, topic_id: &str, partition: i32) -> String {
        self.key(format_args!("compaction/jobs/{topic_id}/{partition}"))
    }

    /// Prefix of every compaction claim.
    pub fn compaction_claims(&self) -> String {
        self.key(format_args!("compaction/claims/"))
    }

    /// A worker's claim of a partition's compaction job.
    pub fn compaction_claim(&self, topic_id: &str, partition: i32) -> String {
        self.key(format_args!("compaction/claims/{topic_id}/{partition}"))
    }

    /// Prefix of every GC mark.
    pub fn gc_marks(&self) -> String {
        self.key(format_args!("gc/"))
    }

    /// The GC mark of one object.
    pub fn gc_mark(&self, object: &str) -> String {
        self.key(format_args!("gc/{object}"))
    }

    /// Prefix of every user credential.
    pub fn users(&self) -> String {
        self.key(format_args!("users/"))
    }

    /// Prefix of one user's credentials.
    pub fn user(&self, name: &str) -> String {
        self.key(format_args!("users/{name}/"))
    }

    /// A user's credential for one SASL mechanism.
    pub fn user_credential(&self, name: &str, mechanism: &str) -> String {
        self.key(format_args!("users/{name}/{mechanism}"))
    }

    /// Prefix of every ACL binding.
    pub fn acls(&self) -> String {
        self.key(format_args!("acls/"))
    }

    /// One ACL binding.
    pub fn acl(&self, name: &str) -> String {
        self.key(format_args!("acls/{name}"))
    }

    /// Prefix of every quota.
    pub fn quotas(&self) -> String {
        self.key(format_args!("quotas/"))
    }

    /// One entity's quotas.
    pub fn quota(&self, entity: &str) -> String {
        self.key(format_args!("quotas/{entity}"))
    }

    /// Prefix of every bearer token.
    pub fn tokens(&self) -> String {
        self.key(format_args!("tokens/"))
    }

    /// One bearer token, by the digest of its secret.
    pub fn token(&self, digest: &str) -> String {
        self.key(format_args!("tokens/{digest}"))
    }

    /// Parse a key of this cluster; `None` for keys of other clusters and
    /// for anything sluice does not write.
    pub fn parse<'k>(&self, key: &'k str) -> Option<Key<'k>> {
        let rest = key.strip_prefix(self.root.as_str())?;
        match rest {
            "cluster" => return Some(Key::ClusterId),
            "node-id-counter" => return Some(Key::NodeIdCounter),
            "producer-ids" => return Some(Key::ProducerIdCounter),
            "controller" => return Some(Key::Controller),
            "node-secret" => return Some(Key::NodeSecret),
            _ => {}
        }
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "topics" if !rest.is_empty() && !rest.contains('/') => Some(Key::Topic { name: rest }),
            "heads" => {
                let (topic_id, partition) = topic_partition(rest)?;
                Some(Key::Head {
                    topic_id,
                    partition,
                })
            }
            "index" => {
                let (partition_key, base) = rest.rsplit_once('/')?;
                let (topic_id, partition) = topic_partition(partition_key)?;
                let base_offset: i64 = base.parse().ok()?;
                (base.len() == 20 && base_offset >= 0).then_some(Key::Index {
                    topic_id,
                    partition,
                    base_offset,
                })
            }
            "nodes" => {
                let node_id: i32 = rest.parse().ok()?;
                (node_id.to_string() == rest).then_some(Key::Node { node_id })
            }
            "groups" => {
                let (group, leaf) = rest.split_once('/')?;
                let leaf = match leaf {
                    "coordinator" => GroupLeaf::Coordinator,
                    "state" => GroupLeaf::State,
                    _ => return None,
                };
                (!group.is_empty()).then_some(Key::Group { group, leaf })
            }
            "offsets" => {
                let (group, rest) = rest.split_once('/')?;
                let (topic, partition) = topic_partition(rest)?;
                (!group.is_empty() && !topic.contains('/')).then_some(Key::Offset {
                    group,
                    topic,
                    partition,
                })
            }
            "compaction" => {
                let (kind, rest) = rest.split_once('/')?;
                let (topic_id, partition) = topic_partition(rest)?;
                if topic_id.contains('/') {
                    return None;
                }
                match kind {
                    "jobs" => Some(Key::CompactionJob {
                        topic_id,
                        partition,
                    }),
                    "claims" => Some(Key::CompactionClaim {
                        topic_id,
                        partition,
                    }),
                    _ => None,
                }
            }
            "gc" if !rest.is_empty() => Some(Key::GcMark { object: rest }),
            "acls" if !rest.is_empty() && !rest.contains('/') => Some(Key::Acl { name: rest }),
            "quotas" if !rest.is_empty() && !rest.contains('/') => {
                Some(Key::Quota { entity: rest })
            }
            "tokens" if !rest.is_empty() && !rest.contains('/') => {
                Some(Key::Token { digest: rest })
            }
            "users" => {
                let (name, mechanism) = rest.split_once('/')?;
                (!name.is_empty() && !mechanism.is_empty() && !mechanism.contains('/'))
                    .then_some(Key::UserCredential { name, mechanism })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("test")
    }

    #[test]
    fn every_key_round_trips() {
        let k = keys();
        let cases: Vec<(String, Key<'static>)> = vec![
            (k.cluster_id(), Key::ClusterId),
            (k.node_id_counter(), Key::NodeIdCounter),
            (k.producer_id_counter(), Key::ProducerIdCounter),
            (k.controller(), Key::Controller),
            (k.node_secret(), Key::NodeSecret),
            (
                k.topic("orders.v1_x-y"),
                Key::Topic {
                    name: "orders.v1_x-y",
                },
            ),
            (
                k.head("t0", 7),
                Key::Head {
                    topic_id: "t0",
                    partition: 7,
                },
            ),
            (
                k.index_entry("t0", 3, 42),
                Key::Index {
                    topic_id: "t0",
                    partition: 3,
                    base_offset: 42,
                },
            ),
            (
                k.index_entry("t0", 0, i64::MAX),
                Key::Index {
                    topic_id: "t0",
                    partition: 0,
                    base_offset: i64::MAX,
                },
            ),
            (k.node(12), Key::Node { node_id: 12 }),
            (
                k.group("g-1", GroupLeaf::Coordinator),
                Key::Group {
                    group: "g-1",
                    leaf: GroupLeaf::Coordinator,
                },
            ),
            (
                k.group("g.2", GroupLeaf::State),
                Key::Group {
                    group: "g.2",
                    leaf: GroupLeaf::State,
                },
            ),
            (
                k.offset("g", "orders", 5),
                Key::Offset {
                    group: "g",
                    topic: "orders",
                    partition: 5,
                },
            ),
            (
                k.compaction_job("t1", 2),
                Key::CompactionJob {
                    topic_id: "t1",
                    partition: 2,
                },
            ),
            (
                k.compaction_claim("t1", 2),
                Key::CompactionClaim {
                    topic_id: "t1",
                    partition: 2,
                },
            ),
            (
                k.gc_mark("archive/orders/partition=0/0-9.parquet"),
                Key::GcMark {
                    object: "archive/orders/partition=0/0-9.parquet",
                },
            ),
            (k.acl("0a0b"), Key::Acl { name: "0a0b" }),
            (k.token("ff00"), Key::Token { digest: "ff00" }),
            (k.quota("2d00"), Key::Quota { entity: "2d00" }),
            (
                k.user_credential("alice", "SCRAM-SHA-512"),
                Key::UserCredential {
                    name: "alice",
                    mechanism: "SCRAM-SHA-512",
                },
            ),
        ];
        for (key, parsed) in &cases {
            assert!(key.starts_with("/sluice/test/"), "{key}");
            assert_eq!(k.parse(key), Some(*parsed), "{key}");
        }
    }

    #[test]
    fn generated_keys_round_trip() {
        // a small deterministic property test over ids, partitions and offsets
        let k = keys();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let partition = (x % 10_000) as i32;
            let base = (x >> 3) as i64 & i64::MAX;
            let id = format!("{:x}", x >> 11);
            assert_eq!(
                k.parse(&k.index_entry(&id, partition, base)),
                Some(Key::Index {
                    topic_id: &id,
                    partition,
                    base_offset: base
                })
            );
            assert_eq!(
                k.parse(&k.head(&id, partition)),
                Some(Key::Head {
                    topic_id: &id,
                    partition
                })
            );
            assert_eq!(
                k.parse(&k.offset(&id, &id, partition)),
                Some(Key::Offset {
                    group: &id,
                    topic: &id,
                    partition
                })
            );
        }
    }

    #[test]
    fn index_keys_sort_in_offset_order() {
        let k = keys();
        let mut offsets = [0_i64, 9, 10, 99, 100, 12_345, i64::MAX];
        let mut built: Vec<String> = offsets.iter().map(|o| k.index_entry("t", 0, *o)).collect();
        built.sort();
        offsets.sort();
        let parsed: Vec<i64> = built
            .iter()
            .map(|key| match k.parse(key) {
                Some(Key::Index { base_offset, .. }) => base_offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(parsed, offsets);
    }

    #[test]
    fn prefixes_hold_their_keys() {
        let k = keys();
        assert!(k.topic("a").starts_with(&k.topics()));
        assert!(k.head("t", 0).starts_with(&k.heads()));
        assert!(k
            .index_entry("t", 0, 1)
            .starts_with(&k.partition_index("t", 0)));
        assert!(k.partition_index("t", 0).starts_with(&k.topic_index("t")));
        assert!(k.topic_index("t").starts_with(&k.index()));
        assert!(!k.index_entry("t2", 0, 1).starts_with(&k.topic_index("t")));
        assert!(k.head("t", 3).starts_with(&k.topic_heads("t")));
        assert!(!k
            .index_entry("t", 10, 1)
            .starts_with(&k.partition_index("t", 1)));
        assert!(k.node(1).starts_with(&k.nodes()));
        assert!(k.group("g", GroupLeaf::State).starts_with(&k.groups()));
        assert!(k.offset("g", "t", 0).starts_with(&k.group_offsets("g")));
        assert!(k.group_offsets("g").starts_with(&k.offsets()));
        assert!(!k.offset("g2", "t", 0).starts_with(&k.group_offsets("g")));
        assert!(k.compaction_job("t", 0).starts_with(&k.compaction_jobs()));
        assert!(k
            .compaction_claim("t", 0)
            .starts_with(&k.compaction_claims()));
        assert!(k.gc_mark("segments/x.seg").starts_with(&k.gc_marks()));
        for key in [k.topic("a"), k.node(1), k.gc_mark("x")] {
            assert!(key.starts_with(k.root()));
        }
    }

    #[test]
    fn foreign_and_malformed_keys_do_not_parse() {
        let k = keys();
        for key in [
            "/sluice/other/topics/a",
            "/sluice/test",
            "/sluice/test/",
            "/sluice/test/topics/",
            "/sluice/test/topics/a/b",
            "/sluice/test/heads/t",
            "/sluice/test/heads/t/x",
            "/sluice/test/heads/t/-1",
            "/sluice/test/heads/t/01",
            "/sluice/test/heads//0",
            "/sluice/test/index/t/0/42",
            "/sluice/test/index/t/0/-0000000000000000042",
            "/sluice/test/nodes/x",
            "/sluice/test/nodes/07",
            "/sluice/test/groups/g",
            "/sluice/test/groups/g/other",
            "/sluice/test/groups//state",
            "/sluice/test/offsets/g/t",
            "/sluice/test/offsets/g/t/x",
            "/sluice/test/compaction/jobs/t",
            "/sluice/test/compaction/other/t/0",
            "/sluice/test/gc/",
            "/sluice/test/unknown/thing",
        ] {
            assert_eq!(k.parse(key), None, "{key}");
        }
    }
}
