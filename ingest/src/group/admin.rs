//! The groups as an administrator sees them: describe, list, delete.

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
        self.catalog.delete_group(group_id).await?;
        drop(state);
        self.groups.lock().await.remove(group_id);
        Ok(())
    }
}
