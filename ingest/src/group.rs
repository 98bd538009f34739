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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sluice_metadata::groups::{validate_group_id, GroupRecord, MemberRecord, OffsetRecord};
use sluice_metadata::model::{Catalog, ModelError};
use sluice_metadata::LeaseId;
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
}

impl GroupError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::FencedInstanceId => 82,
        }
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
            .await?)
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
        let coordinator = self
            .catalog
            .claim_coordinator(group_id, self.node_id, lease)
            .await?;
        if coordinator != self.node_id {
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
            state: Mutex::new(state),
        });
        let mut groups = self.groups.lock().await;
        let entry = groups.entry(group_id.to_string()).or_insert((lease, group));
        Ok(entry.1.clone())
    }

    /// JoinGroup: waits until the rebalance completes (or fails at once).
    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let group = match self.group(&request.group_id).await {
            Ok(group) => group,
            Err(error) => return JoinResponse::failed(error, &request.member_id),
        };
        let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        if session_timeout < self.config.session_timeout_min
            || session_timeout > self.config.session_timeout_max
        {
            return JoinResponse::failed(GroupError::InvalidSessionTimeout, &request.member_id);
        }
        let receiver = {
            let mut state = group.state.lock().await;
            self.join_locked(&mut state, request, session_timeout)
        };
        self.maybe_complete_join(&group).await;
        receiver
            .await
            .unwrap_or_else(|_| JoinResponse::failed(GroupError::RebalanceInProgress, ""))
    }

    fn join_locked(
        &self,
        state: &mut GroupState,
        request: JoinRequest,
        session_timeout: Duration,
    ) -> oneshot::Receiver<JoinResponse> {
        let fail = |error| answered(JoinResponse::failed(error, &request.member_id));
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        if !state.members.is_empty() {
            if state.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
                return fail(GroupError::InconsistentGroupProtocol);
            }
            let shared = request.protocols.iter().any(|(name, _)| {
                state
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !shared {
                return fail(GroupError::InconsistentGroupProtocol);
            }
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            let static_owner = request.instance_id.as_ref().and_then(|instance| {
                state
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone())
            });
            member_id = new_member_id(&request.client_id);
            if let Some(old_id) = static_owner {
                // a static member came back with a new member id: fence the old one
                if let Some(mut old) = state.members.remove(&old_id) {
                    if let Some(waiter) = old.join_waiter.take() {
                        let _ = waiter
                            .send(JoinResponse::failed(GroupError::FencedInstanceId, &old_id));
                    }
                    if let Some(waiter) = old.sync_waiter.take() {
                        let _ = waiter.send(SyncResponse::failed(GroupError::FencedInstanceId));
                    }
                    let was_leader = state.leader.as_deref() == Some(old_id.as_str());
                    let same_protocols = old.protocols == request.protocols;
                    old.last_heartbeat = now();
                    old.session_timeout = session_timeout;
                    old.client_id = request.client_id.clone();
                    old.client_host = request.client_host.clone();
                    if was_leader {
                        state.leader = Some(member_id.clone());
                    }
                    if state.phase == Phase::Stable && same_protocols && !was_leader {
                        // KIP-345: no rebalance; hand back the current generation
                        let response = current_generation(state, &member_id);
                        state.members.insert(member_id, old);
                        return answered(response);
                    }
                    state.members.insert(member_id.clone(), old);
                }
            } else if request.require_known_member_id {
                if state.pending.len() + state.members.len() >= self.config.members_max {
                    return fail(GroupError::CoordinatorNotAvailable);
                }
                state.pending.insert(member_id.clone(), now());
                return answered(JoinResponse::failed(
                    GroupError::MemberIdRequired,
                    &member_id,
                ));
            }
        } else if !state.members.contains_key(&member_id)
            && state.pending.remove(&member_id).is_none()
        {
            return fail(GroupError::UnknownMemberId);
        } else if let (Some(instance), Some(member)) =
            (&request.instance_id, state.members.get(&member_id))
        {
            if member.instance_id.as_ref() != Some(instance) {
                return fail(GroupError::FencedInstanceId);
            }
        }
        if !state.members.contains_key(&member_id) && state.members.len() >= self.config.members_max
        {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        // a known follower rejoining a stable group unchanged gets the current generation
        if state.phase == Phase::Stable {
            if let Some(member) = state.members.get_mut(&member_id) {
                let is_leader = state.leader.as_deref() == Some(member_id.as_str());
                if !is_leader && member.protocols == request.protocols {
                    member.last_heartbeat = now();
                    return answered(current_generation(state, &member_id));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        state.join_counter += 1;
        let joined_at = state.join_counter;
        let member = state
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                assignment: Vec::new(),
                last_heartbeat: now(),
                joined_at,
                join_waiter: None,
                sync_waiter: None,
            });
        member.protocols = request.protocols;
        member.session_timeout = session_timeout;
        member.rebalance_timeout =
            Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64).max(session_timeout);
        member.last_heartbeat = now();
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinResponse::failed(
                GroupError::RebalanceInProgress,
                &member_id,
            ));
        }
        if state.protocol_type.is_none() || state.members.len() == 1 {
            state.protocol_type = Some(request.protocol_type);
        }
        if state.phase != Phase::PreparingRebalance {
            let was_empty = state.phase == Phase::Empty;
            prepare_rebalance(
                state,
                was_empty.then_some(self.config.initial_rebalance_delay),
            );
        }
        rx
    }

    /// Complete the join phase when every member has rejoined (and any
    /// initial delay has passed).
    async fn maybe_complete_join(&self, group: &Group) {
        let mut state = group.state.lock().await;
        if state.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined =
            state.members.values().all(|m| m.join_waiter.is_some()) && state.pending.is_empty();
        let delay_over = state.rebalance_deadline.is_none_or(|d| d <= now());
        if (all_joined && !state.initial_delay()) || delay_over {
            self.complete_join(&group.id, &mut state).await;
        }
    }

    async fn complete_join(&self, group_id: &str, state: &mut GroupState) {
        // members that did not rejoin in time are out
        state.members.retain(|_, m| m.join_waiter.is_some());
        state.pending.clear();
        state.rebalance_deadline = None;
        state.generation += 1;
        if state.members.is_empty() {
            state.phase = Phase::Empty;
            state.protocol_name = None;
            state.leader = None;
            self.persist(group_id, state).await;
            return;
        }
        let protocol = choose_protocol(&state.members);
        let leader = match &state.leader {
            Some(leader) if state.members.contains_key(leader) => leader.clone(),
            _ => state
                .members
                .iter()
                .min_by_key(|(_, m)| m.joined_at)
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
        };
        state.leader = Some(leader.clone());
        state.protocol_name = Some(protocol.clone());
        state.phase = Phase::CompletingRebalance;
        let mut members: Vec<(&String, &Member)> = state.members.iter().collect();
        members.sort_by_key(|(_, m)| m.joined_at);
        let all: Vec<JoinedMember> = members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: (*id).clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        debug!(
            group = group_id,
            generation = state.generation,
            members = all.len(),
            "join complete"
        );
        let (generation, protocol_type) = (state.generation, state.protocol_type.clone());
        for (id, member) in state.members.iter_mut() {
            member.last_heartbeat = now();
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinResponse {
                    error: None,
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// SyncGroup: the leader hands out assignments; followers wait for them.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> SyncResponse {
        let group = match self.group(group_id).await {
            Ok(group) => group,
            Err(error) => return SyncResponse::failed(error),
        };
        let receiver = {
            let mut state = group.state.lock().await;
            if let Err(error) = check_member(&state, member_id, instance_id, Some(generation)) {
                return SyncResponse::failed(error);
            }
            match state.phase {
                Phase::Empty => return SyncResponse::failed(GroupError::UnknownMemberId),
                Phase::PreparingRebalance => {
                    return SyncResponse::failed(GroupError::RebalanceInProgress)
                }
                Phase::Stable => {
                    return SyncResponse {
                        error: None,
                        protocol_type: state.protocol_type.clone(),
                        protocol_name: state.protocol_name.clone(),
                        assignment: state
                            .members
                            .get(member_id)
                            .map(|m| m.assignment.clone())
                            .unwrap_or_default(),
                    }
                }
                Phase::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(member) = state.members.get_mut(member_id) {
                member.sync_waiter = Some(tx);
                member.last_heartbeat = now();
            }
            if state.leader.as_deref() == Some(member_id) {
                let given: HashMap<String, Vec<u8>> = assignments.into_iter().collect();
                for (id, member) in state.members.iter_mut() {
                    member.assignment = given.get(id).cloned().unwrap_or_default();
                }
                state.phase = Phase::Stable;
                self.persist(group_id, &state).await;
                let (protocol_type, protocol_name) =
                    (state.protocol_type.clone(), state.protocol_name.clone());
                for member in state.members.values_mut() {
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncResponse {
                            error: None,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        });
                    }
                }
            }
            rx
        };
        receiver
            .await
            .unwrap_or_else(|_| SyncResponse::failed(GroupError::RebalanceInProgress))
    }

    /// Heartbeat: keeps the member alive; tells it when to rejoin.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> GroupResult<()> {
        let group = self.group(group_id).await?;
        let mut state = group.state.lock().await;
        check_member(&state, member_id, instance_id, None)?;
        if let Some(member) = state.members.get_mut(member_id) {
            member.last_heartbeat = now();
        }
        match state.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation != state.generation => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: removes members (by id, or by static instance id).
    pub async fn leave(
        &self,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> GroupResult<Vec<GroupResult<()>>> {
        let group = self.group(group_id).await?;
        let mut state = group.state.lock().await;
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let id = match (&instance_id, member_id.is_empty()) {
                (Some(instance), _) => state
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone())
                    .filter(|id| member_id.is_empty() || *id == member_id),
                (None, false) => state
                    .members
                    .contains_key(&member_id)
                    .then_some(member_id.clone()),
                (None, true) => None,
            };
            match id.and_then(|id| state.members.remove(&id)) {
                Some(mut member) => {
                    if let Some(waiter) = member.join_waiter.take() {
                        let _ = waiter.send(JoinResponse::failed(
                            GroupError::UnknownMemberId,
                            &member_id,
                        ));
                    }
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncResponse::failed(GroupError::UnknownMemberId));
                    }
                    removed = true;
                    results.push(Ok(()));
                }
                None => results.push(Err(GroupError::UnknownMemberId)),
            }
        }
        if removed {
            self.members_changed(&group.id, &mut state).await;
        }
        Ok(results)
    }

    /// After members left or expired: rebalance the rest, or go empty.
    async fn members_changed(&self, group_id: &str, state: &mut GroupState) {
        if state.members.is_empty() && state.phase != Phase::PreparingRebalance {
            state.generation += 1;
            state.phase = Phase::Empty;
            state.leader = None;
            state.protocol_name = None;
            self.persist(group_id, state).await;
        } else if state.phase != Phase::PreparingRebalance {
            prepare_rebalance(state, None);
        }
    }

    /// OffsetCommit. `generation` -1 with an empty member id is a commit of
    /// a consumer outside any group (`assign()`), allowed while the group
    /// has no members.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(String, i32, OffsetRecord)>,
    ) -> GroupResult<()> {
        let group = self.group(group_id).await?;
        {
            let state = group.state.lock().await;
            if generation < 0 && member_id.is_empty() {
                if !state.members.is_empty() {
                    return Err(GroupError::UnknownMemberId);
                }
            } else {
                check_member(&state, member_id, instance_id, Some(generation))?;
                if state.phase != Phase::Stable {
                    return Err(GroupError::RebalanceInProgress);
                }
            }
        }
        self.catalog
            .commit_offsets(group_id, &offsets, self.config.txn_ops_max)
            .await?;
        Ok(())
    }

    /// OffsetFetch: every committed offset of the group (read from the
    /// metadata store, so any node can answer).
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
    ) -> GroupResult<BTreeMap<String, BTreeMap<i32, OffsetRecord>>> {
        validate_group_id(group_id)?;
        Ok(self.catalog.fetch_offsets(group_id).await?)
    }

    /// OffsetDelete: allowed while the group has no members.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> GroupResult<()> {
        let group = self.group(group_id).await?;
        let state = group.state.lock().await;
        if !state.members.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        Ok(self
            .catalog
            .delete_offsets(group_id, partitions, self.config.txn_ops_max)
            .await?)
    }

    /// DescribeGroups for one group.
    pub async fn describe(&self, group_id: &str) -> GroupResult<GroupDescription> {
        let group = self.group(group_id).await?;
        let state = group.state.lock().await;
        let protocol = state.protocol_name.clone().unwrap_or_default();
        let mut members: Vec<(&String, &Member)> = state.members.iter().collect();
        members.sort_by_key(|(_, m)| m.joined_at);
        Ok(GroupDescription {
            state: if state.members.is_empty()
                && state.generation == 0
                && state.protocol_type.is_none()
            {
                "Dead"
            } else {
                state.phase.name()
            },
            protocol_type: state.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: members
                .into_iter()
                .map(|(id, m)| DescribedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Groups for ListGroups on this node: those it coordinates, and those
    /// nobody coordinates when `include_unowned` (one node lists them).
    pub async fn list(
        &self,
        include_unowned: bool,
    ) -> GroupResult<Vec<(String, String, &'static str)>> {
        let mut out = Vec::new();
        for group_id in self.catalog.list_groups().await? {
            let coordinator = self.catalog.coordinator(&group_id).await?;
            let owned = coordinator == Some(self.node_id);
            if !(owned || (coordinator.is_none() && include_unowned)) {
                continue;
            }
            let loaded = self
                .groups
                .lock()
                .await
                .get(&group_id)
                .map(|(_, g)| g.clone());
            let (protocol_type, state) = match loaded {
                Some(group) => {
                    let state = group.state.lock().await;
                    (
                        state.protocol_type.clone().unwrap_or_default(),
                        state.phase.name(),
                    )
                }
                None => {
                    let record = self
                        .catalog
                        .load_group(&group_id)
                        .await?
                        .unwrap_or_default();
                    let phase = if record.members.is_empty() {
                        "Empty"
                    } else {
                        "Stable"
                    };
                    (record.protocol_type.unwrap_or_default(), phase)
                }
            };
            out.push((group_id, protocol_type, state));
        }
        Ok(out)
    }

    /// DeleteGroups for one group: only an empty group.
    pub async fn delete(&self, group_id: &str) -> GroupResult<()> {
        let group = self.group(group_id).await?;
        let state = group.state.lock().await;
        if !state.members.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        let exists = self.catalog.load_group(group_id).await?.is_some()
            || !self.catalog.fetch_offsets(group_id).await?.is_empty();
        if !exists {
            return Err(GroupError::GroupIdNotFound);
        }
        self.catalog.delete_group(group_id).await?;
        drop(state);
        self.groups.lock().await.remove(group_id);
        Ok(())
    }

    async fn persist(&self, group_id: &str, state: &GroupState) {
        let protocol = state.protocol_name.clone().unwrap_or_default();
        let record = GroupRecord {
            generation: state.generation,
            protocol_type: state.protocol_type.clone(),
            protocol_name: state.protocol_name.clone(),
            leader: state.leader.clone(),
            members: state
                .members
                .iter()
                .map(|(id, m)| MemberRecord {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        match self
            .catalog
            .save_group(group_id, self.node_id, &record)
            .await
        {
            Ok(true) => {}
            Ok(false) => warn!(
                group = group_id,
                "lost the coordinatorship; state not saved"
            ),
            Err(error) => warn!(group = group_id, %error, "saving group state failed"),
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
                    self.complete_join(&group.id, &mut state).await;
                }
            } else if !expired.is_empty() {
                self.members_changed(&group.id, &mut state).await;
            }
        }
    }
}

impl GroupState {
    /// Whether the rebalance is still inside an empty group's initial delay.
    fn initial_delay(&self) -> bool {
        self.generation == 0 && self.rebalance_deadline.is_some_and(|d| d > now())
    }
}

/// A JoinGroup answer that hands `member_id` the group's current
/// generation without a rebalance.
fn current_generation(state: &GroupState, member_id: &str) -> JoinResponse {
    JoinResponse {
        error: None,
        generation: state.generation,
        protocol_type: state.protocol_type.clone(),
        protocol_name: state.protocol_name.clone(),
        leader: state.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

/// A receiver already holding `response`.
fn answered(response: JoinResponse) -> oneshot::Receiver<JoinResponse> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(response);
    rx
}

fn restore(record: GroupRecord) -> GroupState {
    let mut members = HashMap::new();
    for (i, m) in record.members.into_iter().enumerate() {
        let protocols = match &record.protocol_name {
            Some(name) => vec![(name.clone(), m.metadata)],
            None => Vec::new(),
        };
        members.insert(
            m.member_id,
            Member {
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                protocols,
                assignment: m.assignment,
                last_heartbeat: now(),
                joined_at: i as u64,
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }
    GroupState {
        phase: if members.is_empty() {
            Phase::Empty
        } else {
            Phase::Stable
        },
        generation: record.generation,
        protocol_type: record.protocol_type,
        protocol_name: record.protocol_name,
        leader: record.leader,
        join_counter: members.len() as u64,
        members,
        pending: HashMap::new(),
        rebalance_deadline: None,
    }
}

fn prepare_rebalance(state: &mut GroupState, initial_delay: Option<Duration>) {
    for member in state.members.values_mut() {
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResponse::failed(GroupError::RebalanceInProgress));
        }
    }
    let longest = state
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    let wait = match initial_delay {
        Some(delay) => delay.min(longest),
        None => longest,
    };
    state.phase = Phase::PreparingRebalance;
    state.rebalance_deadline = Some(now() + wait);
}

fn check_member(
    state: &GroupState,
    member_id: &str,
    instance_id: Option<&str>,
    generation: Option<i32>,
) -> GroupResult<()> {
    if let Some(instance) = instance_id {
        let owner = state
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.as_str());
        if owner.is_some_and(|owner| owner != member_id) {
            return Err(GroupError::FencedInstanceId);
        }
    }
    if !state.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation.is_some_and(|g| g != state.generation) {
        return Err(GroupError::IllegalGeneration);
    }
    Ok(())
}

/// The protocol every member supports that most members prefer.
fn choose_protocol(members: &HashMap<String, Member>) -> String {
    let mut ordered: Vec<&Member> = members.values().collect();
    ordered.sort_by_key(|m| m.joined_at);
    let Some(first) = ordered.first() else {
        return String::new();
    };
    let candidates: Vec<&String> = first
        .protocols
        .iter()
        .map(|(name, _)| name)
        .filter(|name| {
            ordered
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
        })
        .collect();
    let mut votes: BTreeMap<usize, usize> = BTreeMap::new();
    for member in &ordered {
        if let Some(choice) = member
            .protocols
            .iter()
            .find_map(|(name, _)| candidates.iter().position(|c| *c == name))
        {
            *votes.entry(choice).or_default() += 1;
        }
    }
    let best = votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(i, _)| *i)
        .unwrap_or(0);
    candidates
        .get(best)
        .map(|s| (*s).clone())
        .unwrap_or_default()
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
        let (leader, member) = tokio::join!(join_new(&c, "dynamic"), async {
            let first = c.join(static_join.clone()).await;
            let mut again = static_join.clone();
            again.member_id = first.member_id.clone();
            c.join(again).await
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
}
