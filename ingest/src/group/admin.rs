//! The groups as an administrator sees them: describe, list, delete.

use std::collections::BTreeSet;

use super::*;

impl GroupCoordinator {
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

    /// Groups for ListGroups on this node: those it coordinates (stored, or
    /// in memory only while their first rebalance runs), and those nobody
    /// coordinates when `include_unowned` (one node lists them).
    pub async fn list(
        &self,
        include_unowned: bool,
    ) -> GroupResult<Vec<(String, String, &'static str)>> {
        let mut out = Vec::new();
        let stored: std::collections::BTreeSet<String> =
            self.catalog.list_groups().await?.into_iter().collect();
        let mut ids = stored.clone();
        let loaded: Vec<String> = self.groups.lock().await.keys().cloned().collect();
        ids.extend(loaded);
        for group_id in ids {
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
                    // loaded only to be looked at (an offset fetch of a
                    // group that does not exist): not a group
                    if !stored.contains(&group_id)
                        && state.members.is_empty()
                        && state.pending.is_empty()
                    {
                        continue;
                    }
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
        let deleted = self
            .catalog
            .delete_group(group_id, Some(group.claim))
            .await?;
        drop(state);
        if !deleted {
            self.deposed(&group).await;
            return Err(GroupError::NotCoordinator);
        }
        self.groups.lock().await.remove(group_id);
        Ok(())
    }
}

/// A group as an operator sees it from any node: its state, protocol,
/// coordinator and members with their assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOverview {
    /// Group id.
    pub group_id: String,
    /// State name as Kafka spells it (`Dead` for a group that does not exist).
    pub state: &'static str,
    /// Protocol type (`consumer`), empty when none.
    pub protocol_type: String,
    /// Chosen protocol (the assignor), empty when none.
    pub protocol_name: String,
    /// The node coordinating it, if any.
    pub coordinator: Option<i32>,
    /// Members (with subscription metadata and assignment).
    pub members: Vec<DescribedMember>,
}

impl GroupCoordinator {
    /// Every group of the cluster (stored, or in a first rebalance here).
    pub async fn overview_all(&self) -> GroupResult<Vec<GroupOverview>> {
        let mut ids: BTreeSet<String> = self.catalog.list_groups().await?.into_iter().collect();
        ids.extend(self.groups.lock().await.keys().cloned());
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let overview = self.overview(&id).await?;
            if overview.state != "Dead" {
                out.push(overview);
            }
        }
        Ok(out)
    }

    /// One group: from this node's memory when it coordinates the group,
    /// else as its coordinator last stored it.
    pub async fn overview(&self, group_id: &str) -> GroupResult<GroupOverview> {
        validate_group_id(group_id)?;
        let coordinator = self.catalog.coordinator(group_id).await?;
        let loaded = self.groups.lock().await.contains_key(group_id);
        if loaded && coordinator == Some(self.node_id) {
            let d = self.describe(group_id).await?;
            return Ok(GroupOverview {
                group_id: group_id.to_string(),
                state: d.state,
                protocol_type: d.protocol_type,
                protocol_name: d.protocol_name,
                coordinator,
                members: d.members,
            });
        }
        let record = self.catalog.load_group(group_id).await?;
        let has_offsets = !self.catalog.fetch_offsets(group_id).await?.is_empty();
        let Some(record) = record else {
            return Ok(GroupOverview {
                group_id: group_id.to_string(),
                state: if has_offsets { "Empty" } else { "Dead" },
                protocol_type: String::new(),
                protocol_name: String::new(),
                coordinator,
                members: Vec::new(),
            });
        };
        Ok(GroupOverview {
            group_id: group_id.to_string(),
            state: if record.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            },
            protocol_type: record.protocol_type.unwrap_or_default(),
            protocol_name: record.protocol_name.unwrap_or_default(),
            coordinator,
            members: record
                .members
                .into_iter()
                .map(|m| DescribedMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    metadata: m.metadata,
                    assignment: m.assignment,
                })
                .collect(),
        })
    }
}
