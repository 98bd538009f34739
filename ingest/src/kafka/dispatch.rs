//! Dispatch: one table of the APIs this listener serves — their version
//! ranges (what ApiVersions advertises and what a request is checked
//! against) and their handlers. A handler decodes its request, runs the
//! API's module and encodes the response; the modules know nothing of
//! frames or sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterConfigsRequest, AlterUserScramCredentialsRequest, ApiKey,
    ApiVersionsRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeAclsRequest, DescribeClientQuotasRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, DescribeUserScramCredentialsRequest,
    FetchRequest, FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::Encodable;

use super::framing::{decode_body, encode_response, parse_frame, ConnectionError, Framed, Parsed};
use super::order::Turn;
use super::session::{Admission, Session};
use super::*;
use crate::quota::{self, BusyClock, QuotaKind};

/// What handling one request produced.
pub enum Reply {
    /// Send this response.
    Send(Bytes),
    /// Send nothing (a Produce with acks=0).
    Nothing,
}

/// A request being handled.
pub type Handling = Pin<Box<dyn Future<Output = Result<Reply, ConnectionError>> + Send>>;

type Handler = fn(Arc<KafkaContext>, Arc<Session>, Framed, Turn) -> Handling;

/// One API served: its key, its version range and its handler.
pub struct Api {
    /// The API.
    pub key: ApiKey,
    /// Lowest version served.
    pub min: i16,
    /// Highest version served.
    pub max: i16,
    handler: Handler,
}

/// A handler: decode `$request` from the frame, evaluate `$answer` (with
/// `$context`, `$session`, `$version`, `$header`, `$request` bound),
/// encode it. The
/// answer is evaluated in the request's turn (see [`super::order`]), held
/// until it is computed unless `$answer` takes `$turn` to release it sooner.
macro_rules! api {
    ($key:ident, $min:literal, $max:literal,
     |$context:ident, $session:ident, $version:ident, $header:ident, $request:ident: $ty:ty| $answer:expr) => {
        api!($key, $min, $max, |$context,
                                $session,
                                $version,
                                $header,
                                $request: $ty,
                                turn| $answer)
    };
    ($key:ident, $min:literal, $max:literal,
     |$context:ident, $session:ident, $version:ident, $header:ident, $request:ident: $ty:ty, $turn:ident| $answer:expr) => {
        Api {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |context: Arc<KafkaContext>,
                      session: Arc<Session>,
                      mut framed: Framed,
                      turn: Turn|
             -> Handling {
                // the request's principal and ACLs, for the checks of the
                // API's module (see crate::access)
                let access = Arc::new(context.access(&session));
                Box::pin(crate::access::scoped(access, async move {
                    #[allow(unused_variables)]
                    let $request: $ty = decode_body(&mut framed)?;
                    #[allow(unused_variables)]
                    let ($context, $session, $version, $header) =
                        (&context, &session, framed.version, &framed.header);
                    #[allow(unused_mut, unused_variables)]
                    let mut $turn = turn;
                    $turn.wait().await;
                    let answer: Option<_> = $answer;
                    match answer {
                        Some(mut body) => {
                            // where requests are timed, the time so far is
                            // recorded now, so that the answer carries the
                            // throttle it earns (the rest is recorded after)
                            if let Some(busy) = crate::quota::take_request_busy() {
                                let client_id = framed.header.client_id.as_deref();
                                let throttle = context.record_busy(&session, client_id, busy);
                                if throttle > 0 {
                                    Throttled::at_least(&mut body, throttle);
                                }
                            }
                            encode(&framed, &body).map(Reply::Send)
                        }
                        None => Ok(Reply::Nothing),
                    }
                }))
            },
        }
    };
}

fn encode<T: Encodable>(framed: &Framed, body: &T) -> Result<Bytes, ConnectionError> {
    encode_response(
        framed.api_key,
        framed.version,
        framed.header.correlation_id,
        body,
    )
}

/// Every API served.
///
/// Produce starts at 3 and Fetch at 4: the first versions carrying
/// RecordBatch v2, the only format sluice stores. Fetch stops at 12 (v13+
/// names topics by id); ListOffsets at 6 (v7 adds the max-timestamp query).
/// The admin APIs take the whole codec range of each; InitProducerId v5
/// differs from v4 only for transactions. The ranges cover what librdkafka
/// 2.x (kcat, confluent-kafka) and the Java client negotiate.
pub const APIS: &[Api] = &[
    api!(Produce, 3, 9, |c, s, v, h, r: ProduceRequest, turn| {
        let bytes = produce::request_bytes(&r);
        let answer = produce::handle_in_turn(c, v, r, turn).await;
        let throttle = c.throttle(s, h.client_id.as_deref(), QuotaKind::Produce, bytes);
        answer.map(|response| response.with_throttle_time_ms(throttle))
    }),
    // a fetch changes nothing: its long poll does not hold the turn
    api!(Fetch, 4, 12, |c, s, _v, h, r: FetchRequest, turn| {
        drop(turn);
        let response = fetch::handle(c, r).await;
        let bytes = fetch::response_bytes(&response);
        let throttle = c.throttle(s, h.client_id.as_deref(), QuotaKind::Fetch, bytes);
        Some(response.with_throttle_time_ms(throttle))
    }),
    api!(ListOffsets, 1, 6, |c, _s, v, _h, r: ListOffsetsRequest| {
        Some(list_offsets::handle(c, v, r).await)
    }),
    api!(Metadata, 0, 12, |c, _s, v, _h, r: MetadataRequest| Some(
        metadata::handle(c, v, r).await
    )),
    api!(
        ApiVersions,
        0,
        4,
        |_c, _s, v, _h, _r: ApiVersionsRequest| Some(api_versions::handle(v))
    ),
    api!(
        FindCoordinator,
        0,
        4,
        |c, _s, v, _h, r: FindCoordinatorRequest| Some(find_coordinator::handle(c, v, r).await)
    ),
    api!(JoinGroup, 0, 9, |c, _s, v, h, r: JoinGroupRequest| {
        let client_id = h.client_id.as_deref().unwrap_or_default().to_string();
        Some(join_group::handle(c, v, &client_id, r).await)
    }),
    api!(SyncGroup, 0, 5, |c, _s, _v, _h, r: SyncGroupRequest| Some(
        sync_group::handle(c, r).await
    )),
    api!(Heartbeat, 0, 4, |c, _s, _v, _h, r: HeartbeatRequest| Some(
        heartbeat::handle(c, r).await
    )),
    api!(LeaveGroup, 0, 5, |c, _s, v, _h, r: LeaveGroupRequest| Some(
        leave_group::handle(c, v, r).await
    )),
    api!(
        OffsetCommit,
        2,
        9,
        |c, _s, v, _h, r: OffsetCommitRequest| Some(offset_commit::handle(c, v, r).await)
    ),
    api!(OffsetFetch, 1, 9, |c, _s, v, _h, r: OffsetFetchRequest| {
        Some(offset_fetch::handle(c, v, r).await)
    }),
    api!(
        ListGroups,
        0,
        4,
        |c, _s, _v, _h, r: ListGroupsRequest| Some(list_groups::handle(c, r).await)
    ),
    api!(
        DescribeGroups,
        0,
        5,
        |c, _s, _v, _h, r: DescribeGroupsRequest| Some(describe_groups::handle(c, r).await)
    ),
    api!(
        DeleteGroups,
        0,
        2,
        |c, _s, _v, _h, r: DeleteGroupsRequest| Some(delete_groups::handle(c, r).await)
    ),
    api!(
        OffsetDelete,
        0,
        0,
        |c, _s, _v, _h, r: OffsetDeleteRequest| Some(offset_delete::handle(c, r).await)
    ),
    api!(
        CreateTopics,
        2,
        7,
        |c, _s, v, _h, r: CreateTopicsRequest| Some(create_topics::handle(c, v, r).await)
    ),
    api!(
        DeleteTopics,
        1,
        6,
        |c, _s, v, _h, r: DeleteTopicsRequest| Some(delete_topics::handle(c, v, r).await)
    ),
    api!(
        DeleteRecords,
        0,
        2,
        |c, _s, _v, _h, r: DeleteRecordsRequest| { Some(delete_records::handle(c, r).await) }
    ),
    api!(
        CreatePartitions,
        0,
        3,
        |c, _s, _v, _h, r: CreatePartitionsRequest| Some(create_partitions::handle(c, r).await)
    ),
    api!(
        DescribeConfigs,
        1,
        4,
        |c, _s, v, _h, r: DescribeConfigsRequest| Some(describe_configs::handle(c, v, r).await)
    ),
    api!(
        AlterConfigs,
        0,
        2,
        |c, _s, _v, _h, r: AlterConfigsRequest| Some(alter_configs::handle(c, r).await)
    ),
    api!(
        IncrementalAlterConfigs,
        0,
        1,
        |c, _s, _v, _h, r: IncrementalAlterConfigsRequest| Some(
            incremental_alter_configs::handle(c, r).await
        )
    ),
    api!(
        DescribeCluster,
        0,
        2,
        |c, _s, _v, _h, r: DescribeClusterRequest| Some(describe_cluster::handle(c, r))
    ),
    api!(
        InitProducerId,
        0,
        5,
        |c, _s, _v, _h, r: InitProducerIdRequest| Some(init_producer_id::handle(c, r).await)
    ),
    // SASL: v0 is advertised (librdkafka looks for it) but refused when
    // used, see sasl::handshake
    api!(
        SaslHandshake,
        0,
        1,
        |c, s, v, _h, r: SaslHandshakeRequest| { Some(sasl::handshake(c, s, v, r)) }
    ),
    api!(
        SaslAuthenticate,
        0,
        2,
        |c, s, v, _h, r: SaslAuthenticateRequest| Some(sasl::authenticate(c, s, v, r).await)
    ),
    api!(
        DescribeClientQuotas,
        0,
        1,
        |c, _s, _v, _h, r: DescribeClientQuotasRequest| Some(client_quotas::describe(c, r).await)
    ),
    api!(
        AlterClientQuotas,
        0,
        1,
        |c, _s, _v, _h, r: AlterClientQuotasRequest| Some(client_quotas::alter(c, r).await)
    ),
    api!(
        CreateAcls,
        1,
        3,
        |c, _s, _v, _h, r: CreateAclsRequest| Some(acls::create(c, r).await)
    ),
    api!(
        DescribeAcls,
        1,
        3,
        |c, _s, _v, _h, r: DescribeAclsRequest| Some(acls::describe(c, r))
    ),
    api!(
        DeleteAcls,
        1,
        3,
        |c, _s, _v, _h, r: DeleteAclsRequest| Some(acls::delete(c, r).await)
    ),
    api!(
        DescribeUserScramCredentials,
        0,
        0,
        |c, _s, _v, _h, r: DescribeUserScramCredentialsRequest| Some(
            scram_credentials::describe(c, r).await
        )
    ),
    api!(
        AlterUserScramCredentials,
        0,
        0,
        |c, _s, _v, _h, r: AlterUserScramCredentialsRequest| Some(
            scram_credentials::alter(c, r).await
        )
    ),
];

/// Whether requests of `key` count against request-time quotas: all but
/// those a client needs to connect and authenticate (Kafka exempts them
/// too).
fn is_metered(key: ApiKey) -> bool {
    !matches!(
        key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// A response whose `throttle_time_ms` says how long the client is to wait.
trait Throttled {
    /// Raise the throttle to `ms` if it is less.
    fn at_least(&mut self, ms: i32);
}

macro_rules! throttled {
    ($($ty:ident),* $(,)?) => {
        $(impl Throttled for kafka_protocol::messages::$ty {
            fn at_least(&mut self, ms: i32) {
                self.throttle_time_ms = self.throttle_time_ms.max(ms);
            }
        })*
    };
}

throttled!(
    ProduceResponse,
    FetchResponse,
    ListOffsetsResponse,
    MetadataResponse,
    ApiVersionsResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ListGroupsResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
    OffsetDeleteResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    DeleteRecordsResponse,
    DescribeConfigsResponse,
    AlterConfigsResponse,
    IncrementalAlterConfigsResponse,
    InitProducerIdResponse,
    DescribeClusterResponse,
    CreateAclsResponse,
    DescribeAclsResponse,
    DeleteAclsResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
    DescribeUserScramCredentialsResponse,
    AlterUserScramCredentialsResponse,
);

/// The SASL APIs answer before there is a principal to meter; their
/// responses have no throttle.
impl Throttled for kafka_protocol::messages::SaslHandshakeResponse {
    fn at_least(&mut self, _ms: i32) {}
}

impl Throttled for kafka_protocol::messages::SaslAuthenticateResponse {
    fn at_least(&mut self, _ms: i32) {}
}

/// The served API of `key`, if any.
pub fn api(key: ApiKey) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    api(key).is_some_and(|api| (api.min..=api.max).contains(&version))
}

/// Handle one request frame of `session` in its `turn` on the
/// connection: the response to send, if any. A connection that has not
/// authenticated (or whose SASL session is over) gets nothing but
/// ApiVersions and the SASL APIs: anything else closes it.
pub async fn handle_frame(
    context: Arc<KafkaContext>,
    session: Arc<Session>,
    frame: Bytes,
    turn: Turn,
) -> Result<Reply, ConnectionError> {
    let framed = match parse_frame(frame)? {
        Parsed::Answer(bytes) => return Ok(Reply::Send(bytes)),
        Parsed::Request(framed) => framed,
    };
    match session.admits(framed.api_key) {
        Admission::Admit => {}
        Admission::Unauthenticated => {
            return Err(ConnectionError::Unauthenticated(format!(
                "{:?} before SASL authentication",
                framed.api_key
            )))
        }
        Admission::Expired => {
            return Err(ConnectionError::Unauthenticated(format!(
                "{:?} after the SASL session expired",
                framed.api_key
            )))
        }
    }
    match api(framed.api_key) {
        Some(api) if is_metered(framed.api_key) && context.quotas.limits_request_time() => {
            let client_id = framed.header.client_id.clone();
            let handling = (api.handler)(context.clone(), session.clone(), framed, turn);
            let clock = Arc::new(BusyClock::default());
            let reply = quota::timed(clock.clone(), handling).await;
            // what was not recorded before the answer: its encoding
            context.record_busy(&session, client_id.as_deref(), clock.take());
            reply
        }
        Some(api) => (api.handler)(context, session, framed, turn).await,
        // parse_frame admits only served APIs; anything else is answered
        // with UNSUPPORTED_VERSION where the response can be encoded
        None => unsupported::answer_body(
            framed.api_key,
            framed.version,
            framed.header.correlation_id,
            framed.body.clone(),
        )
        .map(Reply::Send)
        .ok_or_else(|| {
            ConnectionError::BadRequest(format!("{:?} is not implemented", framed.api_key))
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::{Buf, BufMut, BytesMut};

    use sluice_metadata::quotas::{EntityName, QuotaEntity};

    use super::*;
    use crate::kafka::testing::TestNode;

    /// A request frame (without its size) with a v1 header: the codec of
    /// this crate decodes requests, it does not encode them.
    fn request(key: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(key as i16);
        out.put_i16(version);
        out.put_i32(correlation_id);
        out.put_i16(-1); // null client id
        out.put_slice(body);
        out.freeze()
    }

    #[tokio::test]
    async fn a_request_reaches_its_handler_and_the_answer_echoes_its_correlation_id() {
        let node = TestNode::start().await;
        let frame = request(ApiKey::ApiVersions, 0, 41, &[]);
        let Reply::Send(mut answer) = handle_frame(
            node.context.clone(),
            Arc::new(Session::plaintext()),
            frame,
            Turn::free(),
        )
        .await
        .unwrap() else {
            panic!("no answer")
        };
        let size = answer.get_i32() as usize;
        assert_eq!(size, answer.remaining());
        assert_eq!(answer.get_i32(), 41, "correlation id");
        assert_eq!(answer.get_i16(), 0, "error code");
        assert_eq!(answer.get_i32() as usize, APIS.len(), "every served api");
    }

    #[tokio::test]
    async fn produce_with_acks_zero_is_answered_with_nothing() {
        let node = TestNode::start().await;
        let mut body = BytesMut::new();
        body.put_i16(-1); // null transactional id
        body.put_i16(0); // acks
        body.put_i32(1_000); // timeout
        body.put_i32(0); // no topics
        let frame = request(ApiKey::Produce, 3, 5, &body);
        assert!(matches!(
            handle_frame(
                node.context.clone(),
                Arc::new(Session::plaintext()),
                frame,
                Turn::free()
            )
            .await
            .unwrap(),
            Reply::Nothing
        ));
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_closes_the_connection() {
        let node = TestNode::start().await;
        // Metadata v1: a topics array of 5 entries, then nothing
        let frame = request(ApiKey::Metadata, 1, 1, &5i32.to_be_bytes());
        let outcome = handle_frame(
            node.context.clone(),
            Arc::new(Session::plaintext()),
            frame,
            Turn::free(),
        )
        .await;
        assert!(
            matches!(outcome, Err(ConnectionError::BadRequest(_))),
            "{:?}",
            outcome.err()
        );
    }

    /// Metadata v4 for every topic, from `client_id`.
    fn metadata_from(client_id: &str, correlation_id: i32) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(ApiKey::Metadata as i16);
        out.put_i16(4);
        out.put_i32(correlation_id);
        out.put_i16(client_id.len() as i16);
        out.put_slice(client_id.as_bytes());
        out.put_i32(-1); // every topic
        out.put_u8(0); // no auto-creation
        out.freeze()
    }

    /// The throttle_time_ms of a Metadata v4 answer.
    async fn metadata_throttle(node: &TestNode, session: &Arc<Session>, client_id: &str) -> i32 {
        let frame = metadata_from(client_id, 7);
        let Reply::Send(mut answer) =
            handle_frame(node.context.clone(), session.clone(), frame, Turn::free())
                .await
                .unwrap()
        else {
            panic!("no answer")
        };
        answer.advance(4 + 4); // size, correlation id
        answer.get_i32()
    }

    #[tokio::test]
    async fn a_client_over_its_request_time_quota_is_throttled_and_muted() {
        let node = TestNode::start().await;
        let greedy = QuotaEntity {
            user: None,
            client_id: Some(EntityName::Named("greedy".into())),
        };
        // a hundred-millionth of a thread: one request is over it
        node.context
            .catalog
            .alter_quota(&greedy, "request_percentage", Some(0.000_001))
            .await
            .unwrap();
        for _ in 0..200 {
            if node.context.quotas.limits_request_time() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(node.context.quotas.limits_request_time());
        let session = Arc::new(Session::plaintext());
        // the answer carries the throttle its own request earned
        let throttle = metadata_throttle(&node, &session, "greedy").await;
        assert!(throttle > 0, "{throttle}");
        assert!(
            throttle <= 10_000,
            "at most the longest throttle: {throttle}"
        );
        let muted = session.take_mute().expect("muted after its first request");
        assert!(muted > std::time::Duration::ZERO);
        assert!(metadata_throttle(&node, &session, "greedy").await > 0);
        // another client is not limited, on the same connection or another
        let other = Arc::new(Session::plaintext());
        assert_eq!(metadata_throttle(&node, &other, "modest").await, 0);
        assert!(other.take_mute().is_none());
    }

    #[test]
    fn the_table_serves_each_api_once() {
        for (i, api) in APIS.iter().enumerate() {
            assert!(api.min <= api.max, "{:?}", api.key);
            assert!(
                APIS[i + 1..].iter().all(|other| other.key != api.key),
                "{:?} twice",
                api.key
            );
        }
    }
}
