//! A group's state in the metadata store: saved after each completed
//! rebalance, restored by the next coordinator.

use super::*;

impl GroupCoordinator {
    /// Save the group's state while this node's claim holds. False when the
    /// claim is gone: the group is forgotten here (see `deposed`), and what
    /// was decided in memory must not be told to its members.
    pub(super) async fn persist(&self, group: &Group, state: &GroupState) -> bool {
        let group_id = group.id.as_str();
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
            .save_group(group_id, group.claim, &record)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                self.deposed(group).await;
                false
            }
            Err(error) => {
                warn!(group = group_id, %error, "saving group state failed");
                true
            }
        }
    }
}

pub(super) fn restore(record: GroupRecord) -> GroupState {
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
