//! CreateAcls, DescribeAcls and DeleteAcls: Kafka's admin clients manage
//! the ACLs kept in the metadata store (see `sluice_metadata::acls`).
//! Creating and deleting needs ALTER on the cluster, describing needs
//! DESCRIBE on it. Describe reads what this node's view holds (every
//! node's view follows etcd's watch); create and delete go to the store.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_metadata::acls::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
};

use super::KafkaContext;
use crate::access;
use crate::error::IngestError;

/// Kafka's ANY in a filter's enum fields.
const ANY: i8 = 1;
/// Kafka's MATCH pattern filter.
const MATCH: i8 = 2;

fn invalid(message: impl Into<String>) -> (i16, Option<StrBytes>) {
    (
        ResponseError::InvalidRequest.code(),
        Some(StrBytes::from_string(message.into())),
    )
}

fn binding_of(creation: &AclCreation) -> Result<AclBinding, String> {
    let binding = AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type)
            .ok_or_else(|| format!("resource type {} is not supported", creation.resource_type))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: PatternType::from_code(creation.resource_pattern_type).ok_or_else(|| {
            format!(
                "pattern type {} is not LITERAL or PREFIXED",
                creation.resource_pattern_type
            )
        })?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation)
            .ok_or_else(|| format!("operation {} is not supported", creation.operation))?,
        permission: Permission::from_code(creation.permission_type).ok_or_else(|| {
            format!(
                "permission {} is not ALLOW or DENY",
                creation.permission_type
            )
        })?,
    };
    binding.validate()?;
    Ok(binding)
}

/// A request's filter fields as an [`AclFilter`].
#[allow(clippy::too_many_arguments)]
fn filter_of(
    resource_type: i8,
    resource_name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    let pick = |code: i8, what: &str, parse: &dyn Fn(i8) -> bool| -> Result<(), String> {
        if code == ANY || parse(code) {
            Ok(())
        } else {
            Err(format!("{what} {code} is not supported in a filter"))
        }
    };
    pick(resource_type, "resource type", &|c| {
        ResourceType::from_code(c).is_some()
    })?;
    pick(pattern_type, "pattern type", &|c| {
        c == MATCH || PatternType::from_code(c).is_some()
    })?;
    pick(operation, "operation", &|c| {
        Operation::from_code(c).is_some()
    })?;
    pick(permission, "permission", &|c| {
        Permission::from_code(c).is_some()
    })?;
    Ok(AclFilter {
        resource_type: ResourceType::from_code(resource_type),
        resource_name: resource_name.as_ref().map(|n| n.to_string()),
        pattern_type: PatternType::from_code(pattern_type),
        matching: pattern_type == MATCH,
        principal: principal.as_ref().map(|p| p.to_string()),
        host: host.as_ref().map(|h| h.to_string()),
        operation: Operation::from_code(operation),
        permission: Permission::from_code(permission),
    })
}

fn denied(error: IngestError) -> (i16, Option<StrBytes>) {
    (
        error.kind().kafka_error_code(),
        Some(StrBytes::from_string(error.to_string())),
    )
}

/// Answer a CreateAcls request: each binding stored, or its error.
pub async fn create(context: &KafkaContext, request: CreateAclsRequest) -> CreateAclsResponse {
    let allowed = access::cluster(Operation::Alter);
    let mut results = Vec::with_capacity(request.creations.len());
    for creation in &request.creations {
        let (code, message) = match (&allowed, binding_of(creation)) {
            (Err(error), _) => denied(error.clone()),
            (Ok(()), Err(reason)) => invalid(reason),
            (Ok(()), Ok(binding)) => match context.catalog.create_acl(&binding).await {
                Ok(()) => (0, None),
                Err(error) => (
                    IngestError::from(error).kind().kafka_error_code(),
                    Some(StrBytes::from_string("the ACL could not be stored".into())),
                ),
            },
        };
        results.push(
            AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    CreateAclsResponse::default().with_results(results)
}

/// Answer a DescribeAcls request: the bindings matching its filter,
/// grouped by resource pattern.
pub fn describe(context: &KafkaContext, request: DescribeAclsRequest) -> DescribeAclsResponse {
    if let Err(error) = access::cluster(Operation::Describe) {
        let (code, message) = denied(error);
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(message);
    }
    let filter = match filter_of(
        request.resource_type_filter,
        &request.resource_name_filter,
        request.pattern_type_filter,
        &request.principal_filter,
        &request.host_filter,
        request.operation,
        request.permission_type,
    ) {
        Ok(filter) => filter,
        Err(reason) => {
            let (code, message) = invalid(reason);
            return DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message);
        }
    };
    let mut resources: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for binding in context.view.acls().iter().filter(|b| filter.matches(b)) {
        resources
            .entry((
                binding.resource_type,
                binding.resource_name.clone(),
                binding.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(binding.principal.clone()))
                    .with_host(StrBytes::from_string(binding.host.clone()))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|((resource_type, name, pattern), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(resource_type.code())
                    .with_resource_name(StrBytes::from_string(name))
                    .with_pattern_type(pattern.code())
                    .with_acls(acls)
            })
            .collect(),
    )
}

/// Answer a DeleteAcls request: per filter, the bindings it deleted.
pub async fn delete(context: &KafkaContext, request: DeleteAclsRequest) -> DeleteAclsResponse {
    let allowed = access::cluster(Operation::Alter);
    let mut results = Vec::with_capacity(request.filters.len());
    for wanted in &request.filters {
        let filter = filter_of(
            wanted.resource_type_filter,
            &wanted.resource_name_filter,
            wanted.pattern_type_filter,
            &wanted.principal_filter,
            &wanted.host_filter,
            wanted.operation,
            wanted.permission_type,
        );
        let result = DeleteAclsFilterResult::default();
        results.push(match (&allowed, filter) {
            (Err(error), _) => {
                let (code, message) = denied(error.clone());
                result.with_error_code(code).with_error_message(message)
            }
            (Ok(()), Err(reason)) => {
                let (code, message) = invalid(reason);
                result.with_error_code(code).with_error_message(message)
            }
            (Ok(()), Ok(filter)) => match context.catalog.delete_acls(&filter).await {
                Ok(deleted) => result.with_matching_acls(deleted.iter().map(matching).collect()),
                Err(error) => result
                    .with_error_code(IngestError::from(error).kind().kafka_error_code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "the ACLs could not be deleted",
                    ))),
            },
        });
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

fn matching(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(binding.resource_type.code())
        .with_resource_name(StrBytes::from_string(binding.resource_name.clone()))
        .with_pattern_type(binding.pattern_type.code())
        .with_principal(StrBytes::from_string(binding.principal.clone()))
        .with_host(StrBytes::from_string(binding.host.clone()))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}
