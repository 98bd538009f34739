//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! Kafka's admin clients list and manage the SCRAM users kept in the
//! metadata store. An upsertion carries the salted password the client
//! computed (never the password); the node keeps only the stored and
//! server keys derived from it.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_auth::scram;
use sluice_metadata::users::{validate_user_name, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN};

use sluice_metadata::acls::Operation;

use super::KafkaContext;
use crate::access;

fn error_message(error: ResponseError, message: String) -> (i16, Option<StrBytes>) {
    (error.code(), Some(StrBytes::from_string(message)))
}

/// Answer a DescribeUserScramCredentials request (every user when the
/// request names none).
pub async fn describe(
    context: &KafkaContext,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if let Err(denied) = access::cluster(Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(denied.kind().kafka_error_code())
            .with_error_message(Some(StrBytes::from_string(denied.to_string())));
    }
    let users = match context.catalog.users().await {
        Ok(users) => users,
        Err(error) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(StrBytes::from_string(error.to_string())))
        }
    };
    let info = |credentials: &Vec<(ScramMechanism, u32)>| -> Vec<CredentialInfo> {
        credentials
            .iter()
            .map(|(m, iterations)| {
                CredentialInfo::default()
                    .with_mechanism(m.code())
                    .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
            })
            .collect()
    };
    // none named (null, or the empty list librdkafka sends): every user
    let results = match request.users.filter(|asked| !asked.is_empty()) {
        None => users
            .iter()
            .map(|(name, credentials)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(name.clone()))
                    .with_credential_infos(info(credentials))
            })
            .collect(),
        Some(asked) => {
            let mut seen = BTreeMap::<String, usize>::new();
            for user in &asked {
                *seen.entry(user.name.to_string()).or_default() += 1;
            }
            asked
                .iter()
                .map(|user| {
                    let name = user.name.to_string();
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(user.name.clone());
                    let (code, message) = if seen[&name] > 1 {
                        error_message(
                            ResponseError::DuplicateResource,
                            format!("user {name:?} is asked for more than once"),
                        )
                    } else if let Some(credentials) = users.get(&name) {
                        return result.with_credential_infos(info(credentials));
                    } else {
                        error_message(
                            ResponseError::ResourceNotFound,
                            format!(
                                "attempt to describe a user credential that does not exist: {name}"
                            ),
                        )
                    };
                    result.with_error_code(code).with_error_message(message)
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// What one user's part of an Alter asks for.
#[derive(Default)]
struct Changes {
    deletions: Vec<ScramMechanism>,
    upsertions: Vec<(ScramMechanism, sluice_metadata::users::ScramCredential)>,
    error: Option<(i16, Option<StrBytes>)>,
}

/// Answer an AlterUserScramCredentials request: every user's changes are
/// checked, then applied; one user's error does not stop the others.
pub async fn alter(
    context: &KafkaContext,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if let Err(denied) = access::cluster(Operation::Alter) {
        let (code, message) = error_message(denied.kind().kafka_error(), denied.to_string());
        let users: BTreeSet<String> = request
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(request.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .into_iter()
                .map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(StrBytes::from_string(user))
                        .with_error_code(code)
                        .with_error_message(message.clone())
                })
                .collect(),
        );
    }
    let mut users: BTreeMap<String, Changes> = BTreeMap::new();
    let mut mentioned = BTreeSet::new();
    let fail = |changes: &mut Changes, error: ResponseError, message: String| {
        if changes.error.is_none() {
            changes.error = Some(error_message(error, message));
        }
    };
    let mechanisms = request
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism))
        .chain(
            request
                .upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism)),
        );
    for (name, mechanism) in mechanisms {
        let changes = users.entry(name.clone()).or_default();
        if !mentioned.insert((name.clone(), mechanism)) {
            fail(
                changes,
                ResponseError::DuplicateResource,
                format!("a credential of {name:?} is altered twice in one request"),
            );
        }
        if let Err(error) = validate_user_name(&name) {
            fail(
                changes,
                ResponseError::UnacceptableCredential,
                error.to_string(),
            );
        }
        if ScramMechanism::from_code(mechanism).is_none() {
            fail(
                changes,
                ResponseError::UnsupportedSaslMechanism,
                format!("unknown SCRAM mechanism {mechanism}"),
            );
        }
    }
    for deletion in &request.deletions {
        if let (Some(changes), Some(m)) = (
            users.get_mut(deletion.name.as_str()),
            ScramMechanism::from_code(deletion.mechanism),
        ) {
            changes.deletions.push(m);
        }
    }
    for upsertion in &request.upsertions {
        let (Some(changes), Some(m)) = (
            users.get_mut(upsertion.name.as_str()),
            ScramMechanism::from_code(upsertion.mechanism),
        ) else {
            continue;
        };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            fail(
                changes,
                ResponseError::UnacceptableCredential,
                format!("iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"),
            );
        } else if upsertion.salted_password.len() != m.hash_len() || upsertion.salt.is_empty() {
            fail(
                changes,
                ResponseError::UnacceptableCredential,
                "the salted password or the salt is malformed".into(),
            );
        } else {
            let credential = scram::from_salted_password(
                m,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations,
            );
            changes.upsertions.push((m, credential));
        }
    }
    let mut results = Vec::new();
    for (name, changes) in users {
        let outcome = match changes.error {
            Some(error) => error,
            None => apply(context, &name, changes).await,
        };
        results.push(
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(name))
                .with_error_code(outcome.0)
                .with_error_message(outcome.1),
        );
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

async fn apply(context: &KafkaContext, name: &str, changes: Changes) -> (i16, Option<StrBytes>) {
    for m in changes.deletions {
        match context.catalog.delete_user_credential(name, Some(m)).await {
            Ok(true) => {}
            Ok(false) => {
                return error_message(
                    ResponseError::ResourceNotFound,
                    format!("attempt to delete a user credential that does not exist: {name} {m}"),
                )
            }
            Err(error) => {
                return error_message(ResponseError::UnknownServerError, error.to_string())
            }
        }
    }
    for (m, credential) in changes.upsertions {
        if let Err(error) = context
            .catalog
            .put_user_credential(name, m, &credential)
            .await
        {
            return error_message(ResponseError::UnacceptableCredential, error.to_string());
        }
    }
    (0, None)
}
