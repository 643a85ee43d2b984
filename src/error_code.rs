//! Why a record failed or an attempt did not succeed: one enum for the
//! codes kpld makes and the codes Kinesis answers, each with its wire
//! string ([`ErrorCode::as_str`], the `error_code` field of the protocol)
//! and its class ([`ErrorCode::class`]: what retrying can do about it).
//!
//! The Kinesis seam (`kinesis.rs`) turns the service's strings into codes
//! once; everything after it compares variants, never strings.

use crate::retry::ErrorClass;
use std::fmt;
use std::sync::Arc;

/// A failure reason. Kinesis codes kpld knows by name have variants (they
/// decide what kpld does); any other code Kinesis sends passes through as
/// [`ErrorCode::Other`], spelled as Kinesis spelled it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // ---- made by kpld, for one record --------------------------------
    /// Data (after compression) + partition key over `max_record_size`.
    RecordTooLarge,
    InvalidPartitionKey,
    InvalidExplicitHashKey,
    InvalidStreamName,
    /// The stream is not in `streams_allowed`.
    StreamNotAllowed,
    /// A new stream while `max_streams` streams are live.
    TooManyStreams,
    /// A compression value this kpld does not know.
    UnsupportedCompression,
    /// The buffers (or the spool) were full and the put asked not to wait.
    Busy,
    /// A `disk` stream's record could not be written to the spool.
    SpoolFailed,
    /// `record_ttl_ms` ran out before the record was delivered.
    Expired,
    /// kpld shut down before the record was delivered.
    ShuttingDown,
    /// An attempt whose aggregate landed on an unexpected shard.
    WrongShard,
    // ---- made by kpld, for a call that got no usable answer ----------
    RequestTimeout,
    ConnectTimeout,
    ConnectionError,
    /// The answer could not be read.
    ResponseError,
    /// The request could not be built or sent (not retried).
    RequestError,
    /// ListShards answered a map with holes or overlaps.
    IncompleteShardMap,
    /// ListShards answered a hash key range that is not a number.
    BadShardMap,
    // ---- answered by Kinesis -----------------------------------------
    ProvisionedThroughputExceeded,
    LimitExceeded,
    Throttling,
    KmsThrottling,
    ResourceNotFound,
    AccessDenied,
    Validation,
    InvalidArgument,
    ResourceInUse,
    InternalFailure,
    ServiceUnavailable,
    /// Any other code the service sent.
    Other(Arc<str>),
}

/// Service codes with a variant, and their wire strings.
const SERVICE: &[(&str, ErrorCode)] = &[
    (
        "ProvisionedThroughputExceededException",
        ErrorCode::ProvisionedThroughputExceeded,
    ),
    ("LimitExceededException", ErrorCode::LimitExceeded),
    ("ThrottlingException", ErrorCode::Throttling),
    ("KMSThrottlingException", ErrorCode::KmsThrottling),
    ("ResourceNotFoundException", ErrorCode::ResourceNotFound),
    ("AccessDeniedException", ErrorCode::AccessDenied),
    ("ValidationException", ErrorCode::Validation),
    ("InvalidArgumentException", ErrorCode::InvalidArgument),
    ("ResourceInUseException", ErrorCode::ResourceInUse),
    ("InternalFailure", ErrorCode::InternalFailure),
    ("ServiceUnavailable", ErrorCode::ServiceUnavailable),
];

/// Other service codes and what retrying does about them.
const OTHER_THROTTLED: &[&str] = &["Throttling", "RequestLimitExceeded", "SlowDown"];
const OTHER_FATAL: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
];

impl ErrorCode {
    /// The code of a service answer, spelled as the service spelled it.
    pub fn from_service(code: &str) -> ErrorCode {
        SERVICE
            .iter()
            .find(|(s, _)| *s == code)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| ErrorCode::Other(Arc::from(code)))
    }

    /// The string the protocol carries in `error_code` (and CloudWatch in
    /// the `ErrorCode` dimension).
    pub fn as_str(&self) -> &str {
        use ErrorCode::*;
        match self {
            RecordTooLarge => "RecordTooLarge",
            InvalidPartitionKey => "InvalidPartitionKey",
            InvalidExplicitHashKey => "InvalidExplicitHashKey",
            InvalidStreamName => "InvalidStreamName",
            StreamNotAllowed => "StreamNotAllowed",
            TooManyStreams => "TooManyStreams",
            UnsupportedCompression => "UnsupportedCompression",
            Busy => "Busy",
            SpoolFailed => "SpoolFailed",
            Expired => "Expired",
            ShuttingDown => "ShuttingDown",
            WrongShard => "WrongShard",
            RequestTimeout => "RequestTimeout",
            ConnectTimeout => "ConnectTimeout",
            ConnectionError => "ConnectionError",
            ResponseError => "ResponseError",
            RequestError => "RequestError",
            IncompleteShardMap => "IncompleteShardMap",
            BadShardMap => "BadShardMap",
            Other(s) => s,
            known => SERVICE
                .iter()
                .find(|(_, c)| c == known)
                .map(|(s, _)| *s)
                .expect("every service variant is in SERVICE"),
        }
    }

    /// What retrying can do about this code, as a per-entry error or a
    /// failed call without an HTTP status (see [`crate::retry::classify_http`]).
    pub fn class(&self) -> ErrorClass {
        use ErrorCode::*;
        match self {
            ProvisionedThroughputExceeded | LimitExceeded | Throttling | KmsThrottling => {
                ErrorClass::Throttled
            }
            ResourceNotFound | AccessDenied | Validation | InvalidArgument | ResourceInUse
            | RequestError => ErrorClass::Fatal,
            // kpld's per-record codes are final by construction; a call
            // that failed with one is not retried either.
            RecordTooLarge
            | InvalidPartitionKey
            | InvalidExplicitHashKey
            | InvalidStreamName
            | StreamNotAllowed
            | TooManyStreams
            | UnsupportedCompression
            | Busy
            | SpoolFailed
            | Expired
            | ShuttingDown => ErrorClass::Fatal,
            Other(s) if OTHER_THROTTLED.contains(&&**s) => ErrorClass::Throttled,
            Other(s) if OTHER_FATAL.contains(&&**s) => ErrorClass::Fatal,
            // InternalFailure, ServiceUnavailable, timeouts, broken
            // connections and anything unknown: retry, bounded by the TTL.
            _ => ErrorClass::Retryable,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_round_trip_through_their_wire_strings() {
        for (s, c) in SERVICE {
            assert_eq!(ErrorCode::from_service(s), *c);
            assert_eq!(c.as_str(), *s);
        }
        let odd = ErrorCode::from_service("KMSOptInRequired");
        assert_eq!(odd, ErrorCode::Other(Arc::from("KMSOptInRequired")));
        assert_eq!(odd.as_str(), "KMSOptInRequired");
    }

    #[test]
    fn codes_are_classified_by_what_retrying_can_do() {
        let class = |s: &str| ErrorCode::from_service(s).class();
        assert_eq!(
            class("ProvisionedThroughputExceededException"),
            ErrorClass::Throttled
        );
        assert_eq!(class("SlowDown"), ErrorClass::Throttled);
        assert_eq!(class("InternalFailure"), ErrorClass::Retryable);
        assert_eq!(class("SomethingNew"), ErrorClass::Retryable);
        assert_eq!(class("ResourceNotFoundException"), ErrorClass::Fatal);
        assert_eq!(class("AccessDeniedException"), ErrorClass::Fatal);
        assert_eq!(class("KMSNotFoundException"), ErrorClass::Fatal);
        assert_eq!(ErrorCode::RequestTimeout.class(), ErrorClass::Retryable);
        assert_eq!(ErrorCode::RequestError.class(), ErrorClass::Fatal);
        assert_eq!(ErrorCode::ShuttingDown.class(), ErrorClass::Fatal);
    }

    #[test]
    fn kpld_codes_keep_their_wire_strings() {
        // Clients and golden frames depend on these spellings.
        for (c, s) in [
            (ErrorCode::Expired, "Expired"),
            (ErrorCode::ShuttingDown, "ShuttingDown"),
            (ErrorCode::WrongShard, "WrongShard"),
            (ErrorCode::Busy, "Busy"),
            (ErrorCode::StreamNotAllowed, "StreamNotAllowed"),
            (ErrorCode::RecordTooLarge, "RecordTooLarge"),
        ] {
            assert_eq!(c.as_str(), s);
            assert_eq!(c.to_string(), s);
        }
    }
}
