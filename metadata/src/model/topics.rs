//! Topic records: create, read, list, delete, grow and reconfigure, each a
//! compare-and-swap on the topic key.

use super::*;

impl Catalog {
    /// Create a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> ModelResult<Topic> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(ModelError::Invalid(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}, got {partitions}"
            )));
        }
        validate_topic_configs(&configs)?;
        let record = TopicRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.to_string(),
            partitions,
            configs,
            created_ms: self.clock.now_ms(),
        };
        let key = self.keys().topic(name);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::put(key, encode_json(&record))]),
            )
            .await?;
        if !response.succeeded {
            return Err(ModelError::TopicExists(name.to_string()));
        }
        Ok(Topic {
            record,
            create_revision: response.revision,
            mod_revision: response.revision,
        })
    }

    /// Read one topic.
    pub async fn get_topic(&self, name: &str) -> ModelResult<Option<Topic>> {
        match self.store.get(&self.keys().topic(name)).await? {
            Some(kv) => Ok(Some(self.decode_topic(&kv)?)),
            None => Ok(None),
        }
    }

    /// Decode a `topics/<name>` key-value.
    pub fn decode_topic(&self, kv: &KeyValue) -> ModelResult<Topic> {
        Ok(Topic {
            record: decode_json(kv)?,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }

    /// Every topic, by name.
    pub async fn list_topics(&self) -> ModelResult<Vec<Topic>> {
        let range = self.store.range(&self.keys().topics()).await?;
        range.kvs.iter().map(|kv| self.decode_topic(kv)).collect()
    }

    /// Delete a topic with its heads and index entries (the objects become
    /// garbage for the collector).
    pub async fn delete_topic(&self, name: &str) -> ModelResult<()> {
        let topic = self
            .get_topic(name)
            .await?
            .ok_or_else(|| ModelError::UnknownTopic(name.to_string()))?;
        let id = &topic.record.id;
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        self.keys().topic(name),
                        CmpOp::Equal,
                        topic.mod_revision,
                    )])
                    .and_then([
                        TxnOp::delete(self.keys().topic(name)),
                        TxnOp::delete_prefix(self.keys.topic_heads(id)),
                        TxnOp::delete_prefix(self.keys.topic_index(id)),
                    ]),
            )
            .await?;
        if response.succeeded {
            Ok(())
        } else {
            Err(ModelError::Concurrent(name.to_string()))
        }
    }

    /// Grow a topic to `partitions` partitions.
    pub async fn add_partitions(&self, name: &str, partitions: i32) -> ModelResult<Topic> {
        let topic = self
            .get_topic(name)
            .await?
            .ok_or_else(|| ModelError::UnknownTopic(name.to_string()))?;
        if partitions <= topic.record.partitions || partitions > PARTITIONS_MAX {
            return Err(ModelError::Invalid(format!(
                "topic {name:?} has {} partitions; the new count must be larger and at most {PARTITIONS_MAX}",
                topic.record.partitions
            )));
        }
        let mut record = topic.record.clone();
        record.partitions = partitions;
        self.replace_topic_record(&topic, record)
            .await?
            .ok_or_else(|| ModelError::Concurrent(name.to_string()))
    }

    /// Replace a topic's whole config set (Kafka AlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        new_configs: BTreeMap<String, String>,
    ) -> ModelResult<Topic> {
        self.update_topic_configs(name, |_| Ok(new_configs.clone()))
            .await
    }

    /// Read a topic, compute its new config set from the current one with
    /// `edit`, validate it and write it with a compare-and-swap on the
    /// topic's mod revision; a lost swap re-reads and re-applies `edit`
    /// (bounded), then fails with [`ModelError::Concurrent`].
    pub async fn update_topic_configs<F>(&self, name: &str, edit: F) -> ModelResult<Topic>
    where
        F: Fn(&BTreeMap<String, String>) -> ModelResult<BTreeMap<String, String>>,
    {
        const ATTEMPTS_MAX: usize = 8;
        for _ in 0..ATTEMPTS_MAX {
            let topic = self
                .get_topic(name)
                .await?
                .ok_or_else(|| ModelError::UnknownTopic(name.to_string()))?;
            let configs = edit(&topic.record.configs)?;
            validate_topic_configs(&configs)?;
            let mut record = topic.record.clone();
            record.configs = configs;
            if let Some(updated) = self.replace_topic_record(&topic, record).await? {
                return Ok(updated);
            }
        }
        Err(ModelError::Concurrent(name.to_string()))
    }

    /// Write `record` over `topic` if the topic key has not changed since it
    /// was read (compare-and-swap on its mod revision); `None` when it has.
    async fn replace_topic_record(
        &self,
        topic: &Topic,
        record: TopicRecord,
    ) -> ModelResult<Option<Topic>> {
        let key = self.keys().topic(&topic.record.name);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CmpOp::Equal,
                        topic.mod_revision,
                    )])
                    .and_then([TxnOp::put(key, encode_json(&record))]),
            )
            .await?;
        Ok(response.succeeded.then_some(Topic {
            record,
            create_revision: topic.create_revision,
            mod_revision: response.revision,
        }))
    }
}
