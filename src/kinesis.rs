//! The Kinesis client seam: the only file that touches the AWS SDK.
//!
//! The pipeline sees [`KinesisApi`]; [`SdkKinesis`] implements it with
//! aws-sdk-kinesis (SDK retries off: the pipeline owns retries, backoff and
//! TTLs). A PutRecords that answers HTTP 200 with failed entries is data
//! (`Ok` with per-entry errors), not an `Err`. Every error is classified
//! here, once, into an [`ErrorCode`] and an [`ErrorClass`] (with the HTTP
//! status of the raw response where there is one); the pipeline only reads
//! the class.

use crate::config::{Config, StreamSettings};
use crate::error_code::ErrorCode;
use crate::retry::{classify_http, ErrorClass};
use crate::shard_map::Shard;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardFilter, ShardFilterType};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One entry of a PutRecords call.
#[derive(Debug, Clone)]
pub struct PutEntry {
    pub data: Bytes,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

/// What Kinesis said about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    Ok {
        shard_id: String,
        sequence_number: String,
    },
    /// The entry was refused; classified like a failed call.
    Err(ApiError),
}

/// A failed call or a refused entry, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub class: ErrorClass,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// An error with the class its code has.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            class: code.class(),
            code,
            message: message.into(),
        }
    }
}

/// The Kinesis calls the pipeline makes.
pub trait KinesisApi: Send + Sync + 'static {
    /// The open shards of a stream (all pages).
    fn list_shards(&self, stream: &str) -> BoxFuture<Result<Vec<Shard>, ApiError>>;
    /// One PutRecords call; results are in entry order.
    fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> BoxFuture<Result<Vec<EntryResult>, ApiError>>;
}

/// Kinesis through aws-sdk-kinesis.
pub struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
    /// Servers that refuse ListShards' ShardFilter (some local ones) get
    /// unfiltered requests; closed shards are dropped here either way.
    shard_filter_supported: Arc<AtomicBool>,
}

/// Why the SDK client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SdkSetupError {
    #[error("no AWS region: set `region` in the config, KPLD_REGION or AWS_REGION")]
    NoRegion,
}

impl SdkKinesis {
    /// Builds the default client from the config and the standard AWS chain
    /// (region, credentials, AWS_ENDPOINT_URL_KINESIS).
    pub async fn new(cfg: &Config) -> Result<(Self, aws_config::SdkConfig), SdkSetupError> {
        let shared = load_shared_config(cfg).await?;
        let me = Self::from_shared(cfg, &shared, cfg.kinesis_endpoint.as_deref());
        Ok((me, shared))
    }

    /// The default client on an already loaded shared config (KPL mode
    /// loads it with the parent's credentials).
    pub fn from_shared_config(cfg: &Config, shared: &aws_config::SdkConfig) -> Self {
        Self::from_shared(cfg, shared, cfg.kinesis_endpoint.as_deref())
    }

    /// A client for a stream whose settings name another region, endpoint
    /// or IAM role (assumed through the standard chain, for cross-account
    /// streams).
    pub async fn for_stream(
        cfg: &Config,
        shared: &aws_config::SdkConfig,
        s: &StreamSettings,
    ) -> Result<Self, SdkSetupError> {
        let mut b = shared.to_builder();
        if let Some(r) = &s.region {
            b = b.region(aws_config::Region::new(r.clone()));
        }
        if let Some(role) = &s.role_arn {
            let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name("kpld")
                .configure(shared);
            if let Some(r) = &s.region {
                p = p.region(aws_config::Region::new(r.clone()));
            }
            b = b.credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(p.build().await),
            );
        }
        let own = b.build();
        let endpoint = s
            .kinesis_endpoint
            .as_deref()
            .or(cfg.kinesis_endpoint.as_deref());
        Ok(Self::from_shared(cfg, &own, endpoint))
    }

    fn from_shared(cfg: &Config, shared: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let mut b = aws_sdk_kinesis::config::Builder::from(shared)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout())
                    .operation_attempt_timeout(cfg.request_timeout())
                    .build(),
            );
        if let Some(ep) = endpoint {
            b = b.endpoint_url(ep);
        }
        SdkKinesis {
            client: aws_sdk_kinesis::Client::from_conf(b.build()),
            shard_filter_supported: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// Credentials whose value is replaced while the clients that use them run:
/// in KPL mode the Java parent sends fresh ones every few seconds. Clients
/// built on them ask on every request (no identity cache), so a new value
/// signs the very next call. Cheap to clone; clones share the value.
#[derive(Debug, Clone)]
pub struct SwappableCredentials {
    current: Arc<arc_swap::ArcSwap<aws_credential_types::Credentials>>,
}

impl SwappableCredentials {
    pub fn new(access_key_id: &str, secret: &str, session_token: Option<&str>) -> Self {
        SwappableCredentials {
            current: Arc::new(arc_swap::ArcSwap::from_pointee(Self::make(
                access_key_id,
                secret,
                session_token,
            ))),
        }
    }

    /// Replaces the value for every client built on these credentials.
    pub fn set(&self, access_key_id: &str, secret: &str, session_token: Option<&str>) {
        self.current
            .store(Arc::new(Self::make(access_key_id, secret, session_token)));
    }

    /// The access key id in use now (for logs; the secret is never shown).
    pub fn access_key_id(&self) -> String {
        self.current.load().access_key_id().to_string()
    }

    fn make(
        access_key_id: &str,
        secret: &str,
        session_token: Option<&str>,
    ) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            access_key_id,
            secret,
            session_token.map(str::to_string),
            None,
            "kpl-parent",
        )
    }
}

impl aws_credential_types::provider::ProvideCredentials for SwappableCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok((**self
            .current
            .load())
        .clone()))
    }
}

/// Region, credentials and HTTP client shared by every AWS client kpld makes.
pub async fn load_shared_config(cfg: &Config) -> Result<aws_config::SdkConfig, SdkSetupError> {
    load_shared_config_with(cfg, None).await
}

/// Like [`load_shared_config`], with `credentials` instead of the standard
/// chain's (KPL mode).
pub async fn load_shared_config_with(
    cfg: &Config,
    credentials: Option<SwappableCredentials>,
) -> Result<aws_config::SdkConfig, SdkSetupError> {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(c) = credentials {
        loader = loader
            .credentials_provider(c)
            .identity_cache(aws_config::identity::IdentityCache::no_cache());
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        return Err(SdkSetupError::NoRegion);
    }
    Ok(shared)
}

/// Asks the credentials chain once. None: it answered. Some: one line naming every source
/// of the standard chain, in the order the SDK tries them, and what the last one said; the
/// SDK's own per-provider warning (a ~900-character dump of the IMDS response) is filtered
/// out of kpld's log in favour of this line.
pub async fn credentials_problem(shared: &aws_config::SdkConfig) -> Option<String> {
    use aws_credential_types::provider::ProvideCredentials;
    let provider = shared.credentials_provider()?;
    let err = provider.provide_credentials().await.err()?;
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let imds = if std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    {
        "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"
    } else {
        "EC2 instance metadata (IMDS)"
    };
    let sources = [
        format!(
            "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: {})",
            if set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY") {
                "set"
            } else {
                "not set"
            }
        ),
        format!("profile {profile:?} in ~/.aws/config and ~/.aws/credentials"),
        format!(
            "web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN: {})",
            if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
                "set"
            } else {
                "not set"
            }
        ),
        format!(
            "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI: {})",
            if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            {
                "set"
            } else {
                "not set"
            }
        ),
        imds.to_string(),
    ];
    Some(format!(
        "no AWS credentials: tried {}; none answered (last: {err}). Records wait for credentials, \
         which are asked for again at every call, until their record_ttl_ms",
        sources.join(", ")
    ))
}

fn sdk_error<E>(e: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = ErrorCode::from_service(err.code().unwrap_or("Unknown"));
            let class = classify_http(se.raw().status().as_u16(), &code);
            ApiError {
                class,
                code,
                message: err.message().unwrap_or("").to_string(),
            }
        }
        SdkError::TimeoutError(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            "no answer within request_timeout_ms",
        ),
        SdkError::DispatchFailure(d) => {
            let code = if d.is_timeout() {
                ErrorCode::ConnectTimeout
            } else {
                ErrorCode::ConnectionError
            };
            ApiError::new(code, error_chain(&e))
        }
        SdkError::ResponseError(_) => ApiError::new(ErrorCode::ResponseError, error_chain(&e)),
        _ => ApiError::new(ErrorCode::RequestError, error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl KinesisApi for SdkKinesis {
    fn list_shards(&self, stream: &str) -> BoxFuture<Result<Vec<Shard>, ApiError>> {
        let client = self.client.clone();
        let stream = stream.to_string();
        let filter_ok = self.shard_filter_supported.clone();
        Box::pin(async move {
            let mut shards = Vec::new();
            let mut token: Option<String> = None;
            loop {
                // A request that carries NextToken must not name the stream.
                let mut req = client.list_shards();
                req = match &token {
                    Some(t) => req.next_token(t),
                    None => {
                        let mut r = req.stream_name(&stream).max_results(1000);
                        if filter_ok.load(Ordering::Relaxed) {
                            r = r.shard_filter(
                                ShardFilter::builder()
                                    .r#type(ShardFilterType::AtLatest)
                                    .build()
                                    .expect("type is set"),
                            );
                        }
                        r
                    }
                };
                let out = match req.send().await {
                    Ok(o) => o,
                    Err(e) => {
                        let err = sdk_error(e);
                        let filter_refused = token.is_none()
                            && filter_ok.load(Ordering::Relaxed)
                            && (matches!(
                                err.code,
                                ErrorCode::Validation | ErrorCode::InvalidArgument
                            ) || matches!(
                                err.code.as_str(),
                                "SerializationException" | "UnknownOperationException"
                            ));
                        if filter_refused {
                            filter_ok.store(false, Ordering::Relaxed);
                            continue;
                        }
                        return Err(err);
                    }
                };
                for s in out.shards() {
                    let closed = s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some();
                    if closed {
                        continue;
                    }
                    let Some(range) = s.hash_key_range() else {
                        continue;
                    };
                    let (Ok(start), Ok(end)) = (
                        range.starting_hash_key().parse::<u128>(),
                        range.ending_hash_key().parse::<u128>(),
                    ) else {
                        return Err(ApiError::new(
                            ErrorCode::BadShardMap,
                            format!("shard {} has an unreadable hash key range", s.shard_id()),
                        ));
                    };
                    shards.push(Shard {
                        id: s.shard_id().into(),
                        start,
                        end,
                    });
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => return Ok(shards),
                }
            }
        })
    }

    fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> BoxFuture<Result<Vec<EntryResult>, ApiError>> {
        let req = self.client.put_records().stream_name(stream);
        let n = entries.len();
        let req = entries.into_iter().fold(req, |req, e| {
            req.records(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(Vec::from(e.data)))
                    .partition_key(e.partition_key)
                    .set_explicit_hash_key(e.explicit_hash_key)
                    .build()
                    .expect("data and partition key are set"),
            )
        });
        Box::pin(async move {
            let out = req.send().await.map_err(sdk_error)?;
            let results: Vec<EntryResult> = out
                .records()
                .iter()
                .map(
                    |r| match (r.shard_id(), r.sequence_number(), r.error_code()) {
                        (Some(shard), Some(seq), None) => EntryResult::Ok {
                            shard_id: shard.to_string(),
                            sequence_number: seq.to_string(),
                        },
                        (_, _, code) => EntryResult::Err(ApiError::new(
                            ErrorCode::from_service(code.unwrap_or("Unknown")),
                            r.error_message().unwrap_or(""),
                        )),
                    },
                )
                .collect();
            if results.len() != n {
                return Err(ApiError::new(
                    ErrorCode::ResponseError,
                    format!(
                        "PutRecords answered {} results for {n} entries",
                        results.len()
                    ),
                ));
            }
            Ok(results)
        })
    }
}

/// One shard as `kpld tail` reads it: open or closed, with its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    /// Its hash key range (first, last), when the server gave a readable one.
    pub range: Option<(u128, u128)>,
}

/// Where reading a shard starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadFrom {
    TrimHorizon,
    Latest,
    /// Seconds since the epoch.
    AtTimestamp(f64),
}

/// One Kinesis record as GetRecords returns it.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Seconds since the epoch.
    pub approximate_arrival: Option<f64>,
}

/// One GetRecords answer.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub records: Vec<ReadRecord>,
    /// `None`: the shard is closed and every record of it was read.
    pub next: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

/// Reads streams back (`kpld tail`) through aws-sdk-kinesis, with the SDK's
/// own retries (a reader has no pipeline owning them).
pub struct SdkReader {
    client: aws_sdk_kinesis::Client,
}

impl SdkReader {
    /// A reader for `endpoint` (else the config's `kinesis_endpoint`, else
    /// AWS's), in `region` (else the config's and the AWS chain's).
    pub async fn new(
        cfg: &Config,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, SdkSetupError> {
        let mut cfg = cfg.clone();
        if let Some(r) = region {
            cfg.region = Some(r.to_string());
        }
        let shared = load_shared_config(&cfg).await?;
        let mut b = aws_sdk_kinesis::config::Builder::from(&shared);
        if let Some(ep) = endpoint.or(cfg.kinesis_endpoint.as_deref()) {
            b = b.endpoint_url(ep);
        }
        Ok(SdkReader {
            client: aws_sdk_kinesis::Client::from_conf(b.build()),
        })
    }

    /// Every shard of `stream`, closed ones included (all pages).
    pub async fn shards(&self, stream: &str) -> Result<Vec<ShardInfo>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(stream),
            };
            let page = req.send().await.map_err(sdk_error)?;
            out.extend(page.shards().iter().map(|s| ShardInfo {
                id: s.shard_id().to_string(),
                parent: s.parent_shard_id().map(str::to_string),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_string),
                range: s.hash_key_range().and_then(|r| {
                    Some((
                        r.starting_hash_key().parse().ok()?,
                        r.ending_hash_key().parse().ok()?,
                    ))
                }),
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// An iterator at `from` in one shard.
    pub async fn iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &ReadFrom,
    ) -> Result<Option<String>, ApiError> {
        use aws_sdk_kinesis::types::ShardIteratorType as T;
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard);
        let req = match from {
            ReadFrom::TrimHorizon => req.shard_iterator_type(T::TrimHorizon),
            ReadFrom::Latest => req.shard_iterator_type(T::Latest),
            ReadFrom::AtTimestamp(t) => req
                .shard_iterator_type(T::AtTimestamp)
                .timestamp(aws_smithy_types::DateTime::from_secs_f64(*t)),
        };
        let out = req.send().await.map_err(sdk_error)?;
        Ok(out.shard_iterator().map(str::to_string))
    }

    /// One GetRecords call.
    pub async fn records(&self, iterator: &str) -> Result<ReadBatch, ApiError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(ReadBatch {
            records: out
                .records()
                .iter()
                .map(|r| ReadRecord {
                    sequence_number: r.sequence_number().to_string(),
                    partition_key: r.partition_key().unwrap_or("").to_string(),
                    data: r.data().as_ref().to_vec(),
                    approximate_arrival: r.approximate_arrival_timestamp().map(|t| t.as_secs_f64()),
                })
                .collect(),
            next: out.next_shard_iterator().map(str::to_string),
            millis_behind_latest: out.millis_behind_latest(),
        })
    }
}
