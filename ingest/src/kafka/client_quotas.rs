//! DescribeClientQuotas and AlterClientQuotas (KIP-546): Kafka's admin
//! clients read and set the quotas kept in the metadata store (see
//! `sluice_metadata::quotas`). Describing needs DESCRIBE_CONFIGS on the
//! cluster, altering ALTER_CONFIGS, as on Kafka.

use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_metadata::acls::Operation;
use sluice_metadata::quotas::{validate_quota, EntityName, QuotaEntity, QuotaRecord};

use super::KafkaContext;
use crate::access;
use crate::error::IngestError;

const USER: &str = "user";
const CLIENT_ID: &str = "client-id";
/// Component match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

fn part<'e>(entity: &'e QuotaEntity, kind: &str) -> Option<&'e EntityName> {
    match kind {
        USER => entity.user.as_ref(),
        _ => entity.client_id.as_ref(),
    }
}

fn matches(record: &QuotaRecord, components: &[ComponentData], strict: bool) -> bool {
    for component in components {
        let found = part(&record.entity, &component.entity_type);
        let ok = match (component.match_type, found) {
            (MATCH_EXACT, Some(EntityName::Named(name))) => component
                ._match
                .as_ref()
                .is_some_and(|m| m.as_str() == name),
            (MATCH_DEFAULT, Some(EntityName::Default)) => true,
            (MATCH_ANY, Some(_)) => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    // strict: the entity has no part the filter does not name
    !strict
        || [USER, CLIENT_ID].iter().all(|kind| {
            part(&record.entity, kind).is_none()
                || components.iter().any(|c| c.entity_type.as_str() == *kind)
        })
}

fn entity_data(entity: &QuotaEntity) -> Vec<EntityData> {
    let mut out = Vec::new();
    for (kind, value) in [(USER, &entity.user), (CLIENT_ID, &entity.client_id)] {
        if let Some(name) = value {
            out.push(
                EntityData::default()
                    .with_entity_type(StrBytes::from_static_str(kind))
                    .with_entity_name(match name {
                        EntityName::Default => None,
                        EntityName::Named(name) => Some(StrBytes::from_string(name.clone())),
                    }),
            );
        }
    }
    out
}

/// Answer a DescribeClientQuotas request from the metadata store (not the
/// view, which may not have applied an alteration this node just made).
pub async fn describe(
    context: &KafkaContext,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if let Err(denied) = access::cluster(Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(denied.kind().kafka_error_code())
            .with_error_message(Some(StrBytes::from_string(denied.to_string())));
    }
    for component in &request.components {
        let known_type = matches!(component.entity_type.as_str(), USER | CLIENT_ID);
        let known_match = (MATCH_EXACT..=MATCH_ANY).contains(&component.match_type);
        if !known_type || !known_match {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "entity type {:?} with match type {} is not supported",
                    component.entity_type.as_str(),
                    component.match_type
                ))));
        }
    }
    let quotas = match context.catalog.quotas().await {
        Ok(quotas) => quotas,
        Err(error) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "reading the quotas: {error}"
                ))))
        }
    };
    let entries = quotas
        .iter()
        .filter(|record| matches(record, &request.components, request.strict))
        .map(|record| {
            EntryData::default()
                .with_entity(entity_data(&record.entity))
                .with_values(
                    record
                        .values
                        .iter()
                        .map(|(key, value)| {
                            ValueData::default()
                                .with_key(StrBytes::from_string(key.clone()))
                                .with_value(*value)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// Answer an AlterClientQuotas request: each entry's operations checked,
/// then applied (unless `validate_only`).
pub async fn alter(
    context: &KafkaContext,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let allowed = access::cluster(Operation::AlterConfigs);
    let mut entries = Vec::with_capacity(request.entries.len());
    for entry in &request.entries {
        let mut entity = QuotaEntity {
            user: None,
            client_id: None,
        };
        let mut problem: Option<(i16, String)> = None;
        for part in &entry.entity {
            let name = match &part.entity_name {
                None => EntityName::Default,
                Some(name) => EntityName::Named(name.to_string()),
            };
            let slot = match part.entity_type.as_str() {
                USER => &mut entity.user,
                CLIENT_ID => &mut entity.client_id,
                other => {
                    problem = Some((
                        ResponseError::InvalidRequest.code(),
                        format!("entity type {other:?} is not user or client-id"),
                    ));
                    continue;
                }
            };
            if slot.replace(name).is_some() {
                problem = Some((
                    ResponseError::InvalidRequest.code(),
                    "an entity type appears twice".into(),
                ));
            }
        }
        if entity.is_empty() && problem.is_none() {
            problem = Some((
                ResponseError::InvalidRequest.code(),
                "an empty entity".into(),
            ));
        }
        for op in &entry.ops {
            if !op.remove {
                if let Err(reason) = validate_quota(&op.key, op.value) {
                    problem.get_or_insert((ResponseError::InvalidRequest.code(), reason));
                }
            }
        }
        if let Err(denied) = &allowed {
            problem = Some((denied.kind().kafka_error_code(), denied.to_string()));
        }
        if problem.is_none() && !request.validate_only {
            for op in &entry.ops {
                let value = (!op.remove).then_some(op.value);
                if let Err(error) = context.catalog.alter_quota(&entity, &op.key, value).await {
                    let error = IngestError::from(error);
                    problem = Some((error.kind().kafka_error_code(), error.to_string()));
                    break;
                }
            }
        }
        let (code, message) = problem.map_or((0, None), |(code, message)| {
            (code, Some(StrBytes::from_string(message)))
        });
        entries.push(
            AlteredEntry::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    entry
                        .entity
                        .iter()
                        .map(|part| {
                            AlteredEntity::default()
                                .with_entity_type(part.entity_type.clone())
                                .with_entity_name(part.entity_name.clone())
                        })
                        .collect(),
                ),
        );
    }
    AlterClientQuotasResponse::default().with_entries(entries)
}
