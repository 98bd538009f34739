//! IncrementalAlterConfigs: SET and DELETE single topic configs; APPEND
//! and SUBTRACT on list configs (`cleanup.policy`). The edit is applied to
//! the topic's current configs inside the catalog's compare-and-swap loop,
//! so concurrent changes of other configs are not lost.

use sluice_metadata::acls::Operation;

use crate::access;
use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::{topic_config, validate_topic_configs, ModelError};
use tracing::info;

use super::alter_configs::{not_alterable, unknown_topic};
use super::topic_configs::{self, config_error, error_parts, AdminError, RESOURCE_TOPIC};
use super::KafkaContext;

/// `AlterConfigOp.OpType` values.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One requested change, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set the config to this value.
    Set(String, String),
    /// Drop the config (back to its default).
    Delete(String),
    /// Add these items to a list config.
    Append(String, Vec<String>),
    /// Remove these items from a list config.
    Subtract(String, Vec<String>),
}

/// Answer an IncrementalAlterConfigs request.
pub async fn handle(
    context: &KafkaContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    let twice = topic_configs::duplicated(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = if twice.contains(&(resource.resource_type, name.clone())) {
            Err(topic_configs::duplicate_resource(&name))
        } else if let (RESOURCE_TOPIC, Err(denied)) = (
            resource.resource_type,
            access::topic(Operation::AlterConfigs, &name),
        ) {
            Err(denied.into())
        } else if resource.resource_type == RESOURCE_TOPIC {
            match parse_changes(&resource.configs) {
                Ok(changes) => {
                    alter(
                        context,
                        resource.resource_name.as_str(),
                        changes,
                        request.validate_only,
                    )
                    .await
                }
                Err(error) => Err(error),
            }
        } else {
            Err(not_alterable(resource.resource_type))
        };
        let (code, message) = error_parts(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn invalid_request(message: String) -> AdminError {
    AdminError::new(ResponseError::InvalidRequest, message)
}

/// Check the operations of one resource: known operation, no config named
/// twice, a value where one is needed, APPEND/SUBTRACT only on lists.
pub fn parse_changes(configs: &[AlterableConfig]) -> Result<Vec<Change>, AdminError> {
    let mut seen = HashSet::new();
    let mut changes = Vec::with_capacity(configs.len());
    for config in configs {
        let name = config.name.to_string();
        if !seen.insert(name.clone()) {
            return Err(invalid_request(format!(
                "config {name:?} appears more than once"
            )));
        }
        let value = config.value.as_ref().map(|v| v.to_string());
        let change = match config.config_operation {
            OP_SET => Change::Set(
                name.clone(),
                value.ok_or_else(|| {
                    AdminError::new(
                        ResponseError::InvalidConfig,
                        format!("SET of {name:?} needs a value"),
                    )
                })?,
            ),
            OP_DELETE => Change::Delete(name),
            op @ (OP_APPEND | OP_SUBTRACT) => {
                if topic_config(&name).is_some() && !topic_configs::is_list(&name) {
                    return Err(invalid_request(format!(
                        "{} is only allowed on list configs; {name:?} is not a list",
                        if op == OP_APPEND {
                            "APPEND"
                        } else {
                            "SUBTRACT"
                        }
                    )));
                }
                let items = split_list(value.as_deref().unwrap_or(""));
                if op == OP_APPEND {
                    Change::Append(name, items)
                } else {
                    Change::Subtract(name, items)
                }
            }
            other => return Err(invalid_request(format!("unknown config operation {other}"))),
        };
        changes.push(change);
    }
    Ok(changes)
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Apply `changes` to `current`; the result is validated by the caller.
pub fn apply(current: &BTreeMap<String, String>, changes: &[Change]) -> BTreeMap<String, String> {
    let mut configs = current.clone();
    for change in changes {
        match change {
            Change::Set(name, value) => {
                configs.insert(name.clone(), value.clone());
            }
            Change::Delete(name) => {
                configs.remove(name);
            }
            Change::Append(name, items) | Change::Subtract(name, items) => {
                let base = configs
                    .get(name)
                    .cloned()
                    .or_else(|| topic_configs::default_value(name))
                    .unwrap_or_default();
                let mut list = split_list(&base);
                if matches!(change, Change::Append(..)) {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                } else {
                    list.retain(|item| !items.contains(item));
                }
                configs.insert(name.clone(), list.join(","));
            }
        }
    }
    configs
}

async fn alter(
    context: &KafkaContext,
    name: &str,
    changes: Vec<Change>,
    validate_only: bool,
) -> Result<(), AdminError> {
    if validate_only {
        let topic = match context.catalog.get_topic(name).await {
            Ok(Some(topic)) => topic,
            Ok(None) => return Err(unknown_topic(name)),
            Err(error) => return Err(config_error(error)),
        };
        return validate_topic_configs(&apply(&topic.record.configs, &changes))
            .map_err(config_error);
    }
    let result = context
        .view
        .update_topic_configs(name, |current| Ok(apply(current, &changes)))
        .await;
    let topic = match result {
        Ok(topic) => topic,
        Err(ModelError::UnknownTopic(_)) => return Err(unknown_topic(name)),
        Err(error) => return Err(config_error(error)),
    };
    info!(topic = name, configs = ?topic.record.configs, "altered topic configs");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kafka::testing::text;

    fn op(name: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(text(name))
            .with_config_operation(operation)
            .with_value(value.map(text))
    }

    #[test]
    fn set_delete_append_and_subtract_apply_in_order() {
        let mut current = BTreeMap::new();
        current.insert("retention.ms".to_string(), "1000".to_string());
        current.insert("segment.ms".to_string(), "5".to_string());
        let changes = parse_changes(&[
            op("retention.ms", OP_SET, Some("2000")),
            op("segment.ms", OP_DELETE, None),
            op("cleanup.policy", OP_APPEND, Some("compact")),
        ])
        .unwrap();
        let next = apply(&current, &changes);
        assert_eq!(next.get("retention.ms").unwrap(), "2000");
        assert!(!next.contains_key("segment.ms"));
        assert_eq!(next.get("cleanup.policy").unwrap(), "delete,compact");
        let changes = parse_changes(&[op("cleanup.policy", OP_SUBTRACT, Some("delete"))]).unwrap();
        assert_eq!(
            apply(&next, &changes).get("cleanup.policy").unwrap(),
            "compact"
        );
    }

    #[test]
    fn append_to_a_scalar_duplicates_and_unknown_ops_are_invalid_requests() {
        let invalid = ResponseError::InvalidRequest.code();
        let (code, message) = parse_changes(&[op("retention.ms", OP_APPEND, Some("1"))])
            .unwrap_err()
            .into_parts();
        assert_eq!(code, invalid);
        assert!(message.contains("not a list"), "{message}");
        let (code, _) = parse_changes(&[op("retention.ms", OP_SUBTRACT, Some("1"))])
            .unwrap_err()
            .into_parts();
        assert_eq!(code, invalid);
        let (code, _) = parse_changes(&[
            op("retention.ms", OP_SET, Some("1")),
            op("retention.ms", OP_DELETE, None),
        ])
        .unwrap_err()
        .into_parts();
        assert_eq!(code, invalid);
        let (code, _) = parse_changes(&[op("retention.ms", 9, Some("1"))])
            .unwrap_err()
            .into_parts();
        assert_eq!(code, invalid);
        let (code, _) = parse_changes(&[op("retention.ms", OP_SET, None)])
            .unwrap_err()
            .into_parts();
        assert_eq!(code, ResponseError::InvalidConfig.code());
    }
}
