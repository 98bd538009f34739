//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete.

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
}
