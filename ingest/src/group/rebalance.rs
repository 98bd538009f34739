//! The rebalance protocol: JoinGroup, SyncGroup, Heartbeat and LeaveGroup
//! on a group's in-memory state, generations and static members.

use super::*;

impl GroupCoordinator {
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

    pub(super) fn join_locked(
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
                    if state.phase == Phase::Stable && same_protocols {
                        // KIP-345: no rebalance; hand back the current
                        // generation (and its assignment at SyncGroup). A
                        // leader also gets the members, told not to assign.
                        let mut response = current_generation(state, &member_id);
                        state.members.insert(member_id.clone(), old);
                        if was_leader {
                            let protocol = state.protocol_name.clone().unwrap_or_default();
                            response.members = joined_members(state, &protocol);
                            response.skip_assignment = true;
                            response.replaced_member_id = Some(old_id.clone());
                        }
                        return answered(response);
                    }
                    state.members.insert(member_id.clone(), old);
                }
            } else if request.require_known_member_id && request.instance_id.is_none() {
                // KIP-394's extra round trip is for dynamic members only: a
                // static member is known by its instance id
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
    pub(super) async fn maybe_complete_join(&self, group: &Group) {
        let mut state = group.state.lock().await;
        if state.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined =
            state.members.values().all(|m| m.join_waiter.is_some()) && state.pending.is_empty();
        let delay_over = state.rebalance_deadline.is_none_or(|d| d <= now());
        if (all_joined && !state.initial_delay()) || delay_over {
            self.complete_join(group, &mut state).await;
        }
    }

    pub(super) async fn complete_join(&self, group: &Group, state: &mut GroupState) {
        // members that did not rejoin in time are out
        state.members.retain(|_, m| m.join_waiter.is_some());
        state.pending.clear();
        state.rebalance_deadline = None;
        state.generation += 1;
        if state.members.is_empty() {
            state.phase = Phase::Empty;
            state.protocol_name = None;
            state.leader = None;
            self.persist(group, state).await;
            return;
        }
        let group_id = group.id.as_str();
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
        let all = joined_members(state, &protocol);
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
                    skip_assignment: false,
                    replaced_member_id: None,
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
                if !self.persist(&group, &state).await {
                    // deposed while paused: the next coordinator decides
                    for member in state.members.values_mut() {
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(SyncResponse::failed(GroupError::NotCoordinator));
                        }
                    }
                    return SyncResponse::failed(GroupError::NotCoordinator);
                }
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
        // as Kafka: who and which generation first, then the phase
        check_member(&state, member_id, instance_id, Some(generation))?;
        if let Some(member) = state.members.get_mut(member_id) {
            member.last_heartbeat = now();
        }
        match state.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
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
                (Some(instance), _) => {
                    let owner = state
                        .members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                        .map(|(id, _)| id.clone());
                    if owner
                        .as_ref()
                        .is_some_and(|id| !member_id.is_empty() && *id != member_id)
                    {
                        // another incarnation of the instance holds it
                        results.push(Err(GroupError::FencedInstanceId));
                        continue;
                    }
                    owner
                }
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
            self.members_changed(&group, &mut state).await;
        }
        Ok(results)
    }

    /// After members left or expired: rebalance the rest, or go empty.
    pub(super) async fn members_changed(&self, group: &Group, state: &mut GroupState) {
        if state.members.is_empty() && state.phase != Phase::PreparingRebalance {
            state.generation += 1;
            state.phase = Phase::Empty;
            state.leader = None;
            state.protocol_name = None;
            self.persist(group, state).await;
        } else if state.phase != Phase::PreparingRebalance {
            prepare_rebalance(state, None);
        }
    }
}

impl GroupState {
    /// Whether the rebalance is still inside an empty group's initial delay.
    pub(super) fn initial_delay(&self) -> bool {
        self.generation == 0 && self.rebalance_deadline.is_some_and(|d| d > now())
    }
}

/// A JoinGroup answer that hands `member_id` the group's current
/// generation without a rebalance.
pub(super) fn current_generation(state: &GroupState, member_id: &str) -> JoinResponse {
    JoinResponse {
        error: None,
        generation: state.generation,
        protocol_type: state.protocol_type.clone(),
        protocol_name: state.protocol_name.clone(),
        leader: state.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: Vec::new(),
        skip_assignment: false,
        replaced_member_id: None,
    }
}

/// Every member in join order with its metadata for `protocol`, as the
/// leader is shown them.
fn joined_members(state: &GroupState, protocol: &str) -> Vec<JoinedMember> {
    let mut members: Vec<(&String, &Member)> = state.members.iter().collect();
    members.sort_by_key(|(_, m)| m.joined_at);
    members
        .iter()
        .map(|(id, m)| JoinedMember {
            member_id: (*id).clone(),
            instance_id: m.instance_id.clone(),
            metadata: m.metadata_for(protocol),
        })
        .collect()
}

/// A receiver already holding `response`.
pub(super) fn answered(response: JoinResponse) -> oneshot::Receiver<JoinResponse> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(response);
    rx
}

pub(super) fn prepare_rebalance(state: &mut GroupState, initial_delay: Option<Duration>) {
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

pub(super) fn check_member(
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
pub(super) fn choose_protocol(members: &HashMap<String, Member>) -> String {
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
