//! The consumer group coordinator: Kafka's classic rebalance protocol
//! (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) with generations,
//! session and rebalance timeouts and static membership, plus committed
//! offsets — all persisted in the metadata store.
//!
//! Each group has one coordinating node, chosen by claiming
//! `groups/<group>/coordinator` on the node's membership lease. The
//! coordinator keeps the live rebalance state in memory and persists the
//! group after every completed rebalance; when it dies, its lease expires,
//! another node claims the group, loads the persisted generation and
//! assignment, and the members carry on (or rejoin).
//!
//! The types here are independent of the wire codec; the Kafka handlers
//! translate.

mod admin;
pub mod consumer_protocol;
mod offsets;
mod persistence;
mod rebalance;

pub use admin::GroupOverview;
pub use consumer_protocol::assigned_partitions;

use persistence::restore;
use rebalance::check_member;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sluice_metadata::groups::{validate_group_id, GroupRecord, MemberRecord, OffsetRecord};
use sluice_metadata::model::{Catalog, ModelError};
use sluice_metadata::{LeaseId, Revision};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Why a group request failed; each maps to one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// Another node coordinates the group.
    NotCoordinator,
    /// No coordinator can be had right now (store unavailable).
    CoordinatorNotAvailable,
    /// The group id is not valid.
    InvalidGroupId,
    /// The member is not (or no longer) in the group.
    UnknownMemberId,
    /// The generation is not the group's.
    IllegalGeneration,
    /// A rebalance is in progress: rejoin.
    RebalanceInProgress,
    /// The member's protocol type or protocols do not match the group's.
    InconsistentGroupProtocol,
    /// The session timeout is out of bounds.
    InvalidSessionTimeout,
    /// A new member must rejoin with the member id handed out (KIP-394).
    MemberIdRequired,
    /// Another member took over this static instance id.
    FencedInstanceId,
    /// The group does not exist.
    GroupIdNotFound,
    /// The group still has members.
    NonEmptyGroup,
    /// A member of the group is subscribed to the topic.
    GroupSubscribedToTopic,
}

impl GroupError {
    /// The Kafka error code (mapped in [`crate::error`]).
    pub fn code(self) -> i16 {
        kafka_protocol::error::ResponseError::from(self).code()
    }
}

impl From<ModelError> for GroupError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Invalid(_) => GroupError::InvalidGroupId,
            other => {
                warn!(error = %other, "group metadata operation failed");
                GroupError::CoordinatorNotAvailable
            }
        }
    }
}

/// Result alias of group operations.
pub type GroupResult<T> = Result<T, GroupError>;

/// Bounds and delays of the coordinator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Smallest session timeout accepted.
    #[serde(with = "humantime_serde")]
    pub session_timeout_min: Duration,
    /// Largest session timeout accepted.
    #[serde(with = "humantime_serde")]
    pub session_timeout_max: Duration,
    /// How long the first rebalance of an empty group waits for more members.
    #[serde(with = "humantime_serde")]
    pub initial_rebalance_delay: Duration,
    /// How often timeouts are checked.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Most members one group may hold.
    pub members_max: usize,
    /// Keys per metadata transaction when committing offsets.
    pub txn_ops_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_min: Duration::from_millis(1_000),
            session_timeout_max: Duration::from_secs(1_800),
            initial_rebalance_delay: Duration::from_millis(1_000),
            tick: Duration::from_millis(100),
            members_max: 1_000,
            txn_ops_max: 128,
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group id.
    pub group_id: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// Supported protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Whether a new member must first obtain a member id (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in a JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with metadata (leader only).
    pub members: Vec<JoinedMember>,
    /// The leader need not assign again: the group is stable and keeps its
    /// assignment (a static leader that came back, KIP-345; JoinGroup v9+).
    pub skip_assignment: bool,
    /// The member id the static member had before it came back.
    pub replaced_member_id: Option<String>,
}

impl JoinResponse {
    fn failed(error: GroupError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Vec<u8>,
}

impl SyncResponse {
    fn failed(error: GroupError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// State name as Kafka spells it.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol_name: String,
    /// Members.
    pub members: Vec<DescribedMember>,
}

/// A described member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscription metadata.
    pub metadata: Vec<u8>,
    /// Assignment.
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heartbeat: Instant,
    joined_at: u64,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncResponse>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct GroupState {
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    join_counter: u64,
}

#[derive(Debug)]
struct Group {
    id: String,
    /// Create revision of the coordinator key this node claimed: every
    /// write to the group's stored state and offsets compares it.
    claim: Revision,
    state: Mutex<GroupState>,
}

/// Coordinates the groups this node owns; see the module docs.
#[derive(Debug)]
pub struct GroupCoordinator {
    catalog: Catalog,
    node_id: i32,
    lease: watch::Receiver<LeaseId>,
    config: GroupConfig,
    /// Groups loaded here, with the lease they were claimed under.
    groups: Mutex<HashMap<String, (LeaseId, Arc<Group>)>>,
}

fn now() -> Instant {
    Instant::now()
}

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid_like())
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

impl GroupCoordinator {
    /// The settings it runs with.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// A coordinator for node `node_id`, claiming groups on the lease that
    /// `lease` reports. Starts the timeout checker, which ends when the
    /// coordinator is dropped.
    pub fn start(
        catalog: Catalog,
        node_id: i32,
        lease: watch::Receiver<LeaseId>,
        config: GroupConfig,
    ) -> Arc<Self> {
        let coordinator = Arc::new(Self {
            catalog,
            node_id,
            lease,
            config,
            groups: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(tick_loop(weak));
        coordinator
    }

    /// The node coordinating `group`, claiming it for this node when no
    /// live node holds it.
    pub async fn find_coordinator(&self, group: &str) -> GroupResult<i32> {
        validate_group_id(group)?;
        let lease = *self.lease.borrow();
        Ok(self
            .catalog
            .claim_coordinator(group, self.node_id, lease)
            .await?
            .node_id)
    }

    /// The group, loaded here if this node coordinates it.
    async fn group(&self, group_id: &str) -> GroupResult<Arc<Group>> {
        validate_group_id(group_id)?;
        let lease = *self.lease.borrow();
        {
            let mut groups = self.groups.lock().await;
            // groups claimed under a lease that was lost are no longer ours
            groups.retain(|_, (claimed, _)| *claimed == lease);
            if let Some((_, group)) = groups.get(group_id) {
                return Ok(group.clone());
            }
        }
        let claim = self
            .catalog
            .claim_coordinator(group_id, self.node_id, lease)
            .await?;
        if claim.node_id != self.node_id {
            return Err(GroupError::NotCoordinator);
        }
        let record = self.catalog.load_group(group_id).await?.unwrap_or_default();
        let state = restore(record);
        info!(
            group = group_id,
            generation = state.generation,
            "coordinating group"
        );
        let group = Arc::new(Group {
            id: group_id.to_string(),
            claim: claim.revision,
            state: Mutex::new(state),
        });
        let mut groups = self.groups.lock().await;
        let entry = groups.entry(group_id.to_string()).or_insert((lease, group));
        Ok(entry.1.clone())
    }

    /// Forget `group`: a write found its claim gone (another node, or this
    /// node under a new lease, holds the coordinator key now). The next
    /// request claims and loads it afresh, or is sent elsewhere.
    async fn deposed(&self, group: &Group) {
        warn!(
            group = group.id,
            "lost the coordinatorship; the group is no longer coordinated here"
        );
        let mut groups = self.groups.lock().await;
        if groups
            .get(&group.id)
            .is_some_and(|(_, held)| held.claim == group.claim)
        {
            groups.remove(&group.id);
        }
    }

    /// Expire members whose session timed out and finish rebalances whose
    /// deadline passed.
    async fn tick(&self) {
        let groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .await
            .values()
            .map(|(_, g)| g.clone())
            .collect();
        for group in groups {
            let mut state = group.state.lock().await;
            let at = now();
            state
                .pending
                .retain(|_, since| at.duration_since(*since) < Duration::from_secs(60));
            // a member waiting in JoinGroup is alive; any other member must
            // heartbeat within its session timeout, whatever the phase
            let expired: Vec<String> = state
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && at.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                info!(group = group.id, member = id, "member session expired");
                if let Some(mut member) = state.members.remove(id) {
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncResponse::failed(GroupError::UnknownMemberId));
                    }
                }
            }
            if state.phase == Phase::PreparingRebalance {
                let all_joined = state.members.values().all(|m| m.join_waiter.is_some())
                    && state.pending.is_empty();
                let deadline_passed = state.rebalance_deadline.is_some_and(|d| d <= at);
                if deadline_passed || (all_joined && !state.initial_delay()) {
                    self.complete_join(&group, &mut state).await;
                }
            } else if !expired.is_empty() {
                self.members_changed(&group, &mut state).await;
            }
        }
    }
}

async fn tick_loop(coordinator: Weak<GroupCoordinator>) {
    loop {
        let Some(strong) = coordinator.upgrade() else {
            return;
        };
        let tick = strong.config.tick;
        strong.tick().await;
        drop(strong);
        tokio::time::sleep(tick).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_metadata::embedded::EmbeddedStore;

    use super::*;

    async fn coordinator(catalog: &Catalog, node_id: i32) -> (Arc<GroupCoordinator>, LeaseId) {
        let lease = catalog.store().lease_grant(60).await.unwrap();
        // a receiver whose sender is gone keeps reporting the last lease
        let (_, rx) = watch::channel(lease);
        let config = GroupConfig {
            initial_rebalance_delay: Duration::from_millis(300),
            ..GroupConfig::default()
        };
        (
            GroupCoordinator::start(catalog.clone(), node_id, rx, config),
            lease,
        )
    }

    fn join_request(member_id: &str, client: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), client.as_bytes().to_vec()),
                ("roundrobin".into(), vec![]),
            ],
            session_timeout_ms: 3_000,
            rebalance_timeout_ms: 5_000,
            client_id: client.into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    /// KIP-394 join: first call hands out a member id, second joins.
    async fn join_new(c: &GroupCoordinator, client: &str) -> JoinResponse {
        let first = c.join(join_request("", client)).await;
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        c.join(join_request(&first.member_id, client)).await
    }

    #[tokio::test(start_paused = true)]
    async fn members_join_one_generation_sync_and_rebalance_when_one_leaves() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let joins =
            futures::future::join_all(["a", "b", "c"].map(|client| join_new(&c, client))).await;
        assert!(
            joins.iter().all(|j| j.error.is_none() && j.generation == 1),
            "{joins:?}"
        );
        assert_eq!(
            joins
                .iter()
                .map(|j| j.protocol_name.clone())
                .collect::<Vec<_>>(),
            vec![Some("range".to_string()); 3]
        );
        let leader = joins.iter().find(|j| j.member_id == j.leader).unwrap();
        assert_eq!(leader.members.len(), 3);
        assert!(joins
            .iter()
            .filter(|j| j.member_id != j.leader)
            .all(|j| j.members.is_empty()));
        let assignments: Vec<(String, Vec<u8>)> = joins
            .iter()
            .map(|j| (j.member_id.clone(), j.member_id.as_bytes().to_vec()))
            .collect();
        let syncs = futures::future::join_all(joins.iter().map(|j| {
            let given = if j.member_id == j.leader {
                assignments.clone()
            } else {
                Vec::new()
            };
            c.sync("g", 1, &j.member_id, None, given)
        }))
        .await;
        for (join, sync) in joins.iter().zip(&syncs) {
            assert_eq!(sync.error, None);
            assert_eq!(sync.assignment, join.member_id.as_bytes());
        }
        assert_eq!(c.heartbeat("g", 1, &joins[0].member_id, None).await, Ok(()));
        assert_eq!(
            c.heartbeat("g", 0, &joins[0].member_id, None).await,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat("g", 1, "nobody", None).await,
            Err(GroupError::UnknownMemberId)
        );
        // offsets: members commit in the current generation only
        let record = OffsetRecord {
            offset: 42,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        };
        c.commit_offsets(
            "g",
            1,
            &joins[0].member_id,
            None,
            vec![("t".into(), 0, record.clone())],
        )
        .await
        .unwrap();
        assert_eq!(
            c.commit_offsets(
                "g",
                0,
                &joins[0].member_id,
                None,
                vec![("t".into(), 0, record.clone())]
            )
            .await,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(c.fetch_offsets("g").await.unwrap()["t"][&0].offset, 42);
        // one member leaves: the others are told to rejoin and get generation 2
        let left = &joins[2].member_id;
        assert_eq!(
            c.leave("g", vec![(left.clone(), None)]).await.unwrap(),
            vec![Ok(())]
        );
        assert_eq!(
            c.heartbeat("g", 1, &joins[0].member_id, None).await,
            Err(GroupError::RebalanceInProgress)
        );
        let rejoins = futures::future::join_all(
            joins[..2]
                .iter()
                .map(|j| c.join(join_request(&j.member_id, &j.member_id))),
        )
        .await;
        assert!(
            rejoins
                .iter()
                .all(|j| j.error.is_none() && j.generation == 2),
            "{rejoins:?}"
        );
        let description = c.describe("g").await.unwrap();
        assert_eq!(description.state, "CompletingRebalance");
        assert_eq!(description.members.len(), 2);
        assert_eq!(c.delete("g").await, Err(GroupError::NonEmptyGroup));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_member_expires_and_the_group_rebalances_without_it() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let joins = futures::future::join_all(["a", "b"].map(|client| join_new(&c, client))).await;
        let leader = joins
            .iter()
            .find(|j| j.member_id == j.leader)
            .unwrap()
            .member_id
            .clone();
        let follower = joins
            .iter()
            .find(|j| j.member_id != j.leader)
            .unwrap()
            .member_id
            .clone();
        let (s1, s2) = tokio::join!(
            c.sync("g", 1, &leader, None, vec![]),
            c.sync("g", 1, &follower, None, vec![])
        );
        assert_eq!((s1.error, s2.error), (None, None));
        // only the leader heartbeats; the follower's 3 s session runs out
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = c.heartbeat("g", 1, &leader, None).await;
        }
        assert_eq!(
            c.heartbeat("g", 1, &leader, None).await,
            Err(GroupError::RebalanceInProgress)
        );
        let rejoin = c.join(join_request(&leader, "a")).await;
        assert_eq!(
            (rejoin.error, rejoin.generation, rejoin.members.len()),
            (None, 2, 1)
        );
        assert_eq!(
            c.heartbeat("g", 2, &follower, None).await,
            Err(GroupError::UnknownMemberId)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_member_that_restarts_keeps_its_assignment_without_a_rebalance() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let mut static_join = join_request("", "static");
        static_join.instance_id = Some("instance-1".into());
        // a static member needs no member-id round trip (KIP-394 is for
        // dynamic members); it joins a little after the dynamic one
        let (leader, member) = tokio::join!(join_new(&c, "dynamic"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.join(static_join.clone()).await
        });
        assert_eq!((leader.error, member.error), (None, None));
        let (leader_id, static_id) = if leader.member_id == leader.leader {
            (leader.member_id.clone(), member.member_id.clone())
        } else {
            (member.member_id.clone(), leader.member_id.clone())
        };
        assert_ne!(
            static_id, leader_id,
            "the dynamic member joined first and leads"
        );
        let assignments = vec![
            (leader_id.clone(), b"p0".to_vec()),
            (static_id.clone(), b"p1".to_vec()),
        ];
        let (a, b) = tokio::join!(
            c.sync("g", 1, &leader_id, None, assignments),
            c.sync("g", 1, &static_id, Some("instance-1"), vec![])
        );
        assert_eq!((a.error, b.assignment.clone()), (None, b"p1".to_vec()));
        // the static member's process restarts: a new member id, the same
        // generation and assignment, and no rebalance for the others
        let rejoined = c.join(static_join.clone()).await;
        assert_eq!((rejoined.error, rejoined.generation), (None, 1));
        assert_ne!(rejoined.member_id, static_id);
        let synced = c
            .sync("g", 1, &rejoined.member_id, Some("instance-1"), vec![])
            .await;
        assert_eq!((synced.error, synced.assignment), (None, b"p1".to_vec()));
        assert_eq!(c.heartbeat("g", 1, &leader_id, None).await, Ok(()));
        // the old incarnation is fenced out
        assert_eq!(
            c.heartbeat("g", 1, &static_id, Some("instance-1")).await,
            Err(GroupError::FencedInstanceId)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_leader_that_restarts_leads_again_without_a_rebalance() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let mut static_join = join_request("", "static");
        static_join.instance_id = Some("instance-1".into());
        static_join.require_known_member_id = false;
        let leader = c.join(static_join.clone()).await;
        assert_eq!((leader.error, leader.generation), (None, 1));
        let follower = c.join(join_request("", "dynamic")).await;
        let follower = c.join(join_request(&follower.member_id, "dynamic"));
        let rejoin = {
            let mut again = static_join.clone();
            again.member_id = leader.member_id.clone();
            c.join(again)
        };
        let (follower, rejoin) = tokio::join!(follower, rejoin);
        assert_eq!((follower.generation, rejoin.generation), (2, 2));
        assert_eq!(rejoin.leader, leader.member_id);
        let assignments = vec![
            (leader.member_id.clone(), b"p0".to_vec()),
            (follower.member_id.clone(), b"p1".to_vec()),
        ];
        let (a, b) = tokio::join!(
            c.sync("g", 2, &leader.member_id, Some("instance-1"), assignments),
            c.sync("g", 2, &follower.member_id, None, vec![])
        );
        assert_eq!(
            (a.assignment, b.assignment),
            (b"p0".to_vec(), b"p1".to_vec())
        );
        // the leader's process restarts: same generation, told the members
        // but not to assign, and the follower keeps its assignment
        let back = c.join(static_join.clone()).await;
        assert_eq!((back.error, back.generation), (None, 2));
        assert_eq!(back.leader, back.member_id);
        assert!(back.skip_assignment);
        assert_eq!(back.members.len(), 2);
        let synced = c
            .sync("g", 2, &back.member_id, Some("instance-1"), vec![])
            .await;
        assert_eq!((synced.error, synced.assignment), (None, b"p0".to_vec()));
        assert_eq!(c.heartbeat("g", 2, &follower.member_id, None).await, Ok(()));
        assert_eq!(c.describe("g").await.unwrap().state, "Stable");
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_of_an_old_generation_is_illegal_even_during_a_rebalance() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let first = join_new(&c, "a").await;
        c.sync("g", 1, &first.member_id, None, vec![]).await;
        // a second member starts a rebalance of generation 1
        let second = c.join(join_request("", "b")).await;
        let joining = tokio::spawn({
            let c = c.clone();
            let id = second.member_id.clone();
            async move { c.join(join_request(&id, "b")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            c.heartbeat("g", 0, &first.member_id, None).await,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat("g", 1, &first.member_id, None).await,
            Err(GroupError::RebalanceInProgress)
        );
        joining.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_with_another_incarnations_member_id_is_fenced() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (c, _) = coordinator(&catalog, 1).await;
        let mut static_join = join_request("", "static");
        static_join.instance_id = Some("instance-1".into());
        static_join.require_known_member_id = false;
        let joined = c.join(static_join).await;
        assert_eq!(joined.error, None);
        let results = c
            .leave(
                "g",
                vec![
                    ("someone-else".into(), Some("instance-1".into())),
                    ("nobody".into(), Some("instance-2".into())),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            results,
            vec![
                Err(GroupError::FencedInstanceId),
                Err(GroupError::UnknownMemberId)
            ]
        );
        assert_eq!(
            c.heartbeat("g", 1, &joined.member_id, Some("instance-1"))
                .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn another_node_takes_over_when_the_coordinator_lease_ends() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (a, lease_a) = coordinator(&catalog, 1).await;
        let (b, _) = coordinator(&catalog, 2).await;
        assert_eq!(a.find_coordinator("g").await, Ok(1));
        assert_eq!(b.find_coordinator("g").await, Ok(1));
        assert_eq!(
            b.heartbeat("g", 1, "m", None).await,
            Err(GroupError::NotCoordinator)
        );
        let mut request = join_request("", "solo");
        request.require_known_member_id = false;
        let joined = a.join(request).await;
        assert_eq!((joined.error, joined.generation), (None, 1));
        let synced = a
            .sync(
                "g",
                1,
                &joined.member_id,
                None,
                vec![(joined.member_id.clone(), b"p0".to_vec())],
            )
            .await;
        assert_eq!(synced.assignment, b"p0");
        catalog.store().lease_revoke(lease_a).await.unwrap();
        assert_eq!(b.find_coordinator("g").await, Ok(2));
        // the new coordinator knows the member, its generation and assignment
        assert_eq!(b.heartbeat("g", 1, &joined.member_id, None).await, Ok(()));
        let again = b.sync("g", 1, &joined.member_id, None, vec![]).await;
        assert_eq!((again.error, again.assignment), (None, b"p0".to_vec()));
        assert_eq!(b.describe("g").await.unwrap().state, "Stable");
    }
    /// A coordinator paused past its lease wakes up with requests in its
    /// sockets and no idea it was deposed (its lease channel still shows the
    /// old lease): its writes are fenced by the claim inside the etcd
    /// transaction, it answers NOT_COORDINATOR, and it forgets the group.
    #[tokio::test]
    async fn a_deposed_coordinator_commits_nothing_and_completes_no_rebalance() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let (zombie, lease_a) = coordinator(&catalog, 1).await;
        let (b, _) = coordinator(&catalog, 2).await;
        let offset = |offset| OffsetRecord {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 1,
        };
        let commit = |c: Arc<GroupCoordinator>, at: i64| async move {
            c.commit_offsets("g", -1, "", None, vec![("t".into(), 0, offset(at))])
                .await
        };
        assert_eq!(commit(zombie.clone(), 10).await, Ok(()));
        // a member joins the zombie; its rebalance completes after the pause
        let mut request = join_request("", "solo");
        request.require_known_member_id = false;
        let joined = zombie.join(request).await;
        assert_eq!((joined.error, joined.generation), (None, 1));

        catalog.store().lease_revoke(lease_a).await.unwrap();
        assert_eq!(b.find_coordinator("g").await, Ok(2));
        assert_eq!(
            b.commit_offsets(
                "g",
                1,
                &joined.member_id,
                None,
                vec![("t".into(), 0, offset(20))]
            )
            .await,
            Err(GroupError::UnknownMemberId),
            "the successor knows only what was stored: no member yet"
        );

        let synced = zombie
            .sync(
                "g",
                1,
                &joined.member_id,
                None,
                vec![(joined.member_id.clone(), b"p0".to_vec())],
            )
            .await;
        assert_eq!(synced.error, Some(GroupError::NotCoordinator));
        assert_eq!(
            commit(zombie.clone(), 5).await,
            Err(GroupError::NotCoordinator)
        );
        assert_eq!(
            catalog.fetch_offsets("g").await.unwrap()["t"][&0].offset,
            10,
            "the zombie's commit is not stored"
        );
        // forgotten: its next request finds the group is node 2's
        assert_eq!(
            commit(zombie.clone(), 5).await,
            Err(GroupError::NotCoordinator)
        );
        assert_eq!(zombie.find_coordinator("g").await, Ok(2));
    }
}
