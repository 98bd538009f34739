//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete.

use std::collections::BTreeSet;

use super::*;

impl GroupCoordinator {
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
        let written = self
            .catalog
            .commit_offsets(
                group_id,
                Some(group.claim),
                &offsets,
                self.config.txn_ops_max,
            )
            .await?;
        if !written {
            self.deposed(&group).await;
            return Err(GroupError::NotCoordinator);
        }
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

    /// OffsetDelete, as Kafka: a group that does not exist is
    /// GROUP_ID_NOT_FOUND; a consumer group with members keeps the offsets
    /// of the topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC,
    /// per partition) and loses the others; any other group with members
    /// refuses (NON_EMPTY_GROUP). Returns one result per partition.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> GroupResult<Vec<GroupResult<()>>> {
        let group = self.group(group_id).await?;
        let state = group.state.lock().await;
        let exists = !state.members.is_empty()
            || self.catalog.load_group(group_id).await?.is_some()
            || !self.catalog.fetch_offsets(group_id).await?.is_empty();
        if !exists {
            return Err(GroupError::GroupIdNotFound);
        }
        let subscribed: BTreeSet<String> = if state.members.is_empty() {
            BTreeSet::new()
        } else if state.protocol_type.as_deref() == Some("consumer") {
            let protocol = state.protocol_name.clone().unwrap_or_default();
            state
                .members
                .values()
                .flat_map(|m| consumer_protocol::subscribed_topics(&m.metadata_for(&protocol)))
                .collect()
        } else {
            return Err(GroupError::NonEmptyGroup);
        };
        let (kept, deleted): (Vec<_>, Vec<_>) = partitions
            .iter()
            .cloned()
            .partition(|(topic, _)| subscribed.contains(topic));
        let written = self
            .catalog
            .delete_offsets(
                group_id,
                Some(group.claim),
                &deleted,
                self.config.txn_ops_max,
            )
            .await?;
        if !written {
            drop(state);
            self.deposed(&group).await;
            return Err(GroupError::NotCoordinator);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if kept.contains(p) {
                    Err(GroupError::GroupSubscribedToTopic)
                } else {
                    Ok(())
                }
            })
            .collect())
    }
}
