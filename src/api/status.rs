//! The one place where errors become etcd's gRPC status codes and messages.
//! Clients (etcdctl, Go clientv3, etcd-client) match on these strings, so
//! they are etcd's exactly.

use tonic::{Code, Status};

use crate::auth::{AuthError, ErrorClass};
use crate::error::ApiError;
use crate::mvcc::MvccError;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let (code, msg): (Code, String) = match &e {
            ApiError::Auth(a) | ApiError::Mvcc(MvccError::Auth(a)) => (auth_code(a), a.to_string()),
            ApiError::Mvcc(m) => {
                let code = match m {
                    MvccError::Compacted | MvccError::FutureRevision => Code::OutOfRange,
                    MvccError::LeaseNotFound => Code::NotFound,
                    MvccError::LeaseExists => Code::FailedPrecondition,
                    MvccError::LeaseTtlTooLarge => Code::OutOfRange,
                    MvccError::KeyNotFound
                    | MvccError::EmptyKey
                    | MvccError::ValueProvided
                    | MvccError::LeaseProvided
                    | MvccError::TooManyOps
                    | MvccError::DuplicateKey
                    | MvccError::UnknownCompareTarget(_)
                    | MvccError::UnknownCompareResult(_)
                    | MvccError::UnknownSort => Code::InvalidArgument,
                    MvccError::Auth(a) => auth_code(a),
                    MvccError::History(_) => Code::Internal,
                };
                (code, format!("etcdserver: {m}"))
            }
            ApiError::RequestTooLarge => (Code::InvalidArgument, e.to_string()),
            ApiError::NoLeader
            | ApiError::Timeout
            | ApiError::Stopped
            | ApiError::LeaderFail
            | ApiError::LeaderTransferTimeout
            | ApiError::NotSupportedForLearner
            | ApiError::Unhealthy => (Code::Unavailable, e.to_string()),
            ApiError::NotLeader
            | ApiError::MemberNotLearner
            | ApiError::LearnerNotReady
            | ApiError::PeerUrlExists
            | ApiError::NotEnoughStartedMembers
            | ApiError::BadLeaderTransferee => (Code::FailedPrecondition, e.to_string()),
            ApiError::MemberNotFound => (Code::NotFound, e.to_string()),
            ApiError::MemberBadUrls => (Code::InvalidArgument, e.to_string()),
            ApiError::Internal(_) => (Code::Internal, e.to_string()),
            ApiError::NotAllowed(_) => (Code::PermissionDenied, e.to_string()),
            // Plain Go errors in etcd's lock and election servers: grpc-go
            // answers them with code Unknown.
            ApiError::ElectionNoLeader
            | ApiError::ElectionNotLeader
            | ApiError::MissingLeaderKey
            | ApiError::SessionExpired => (Code::Unknown, e.to_string()),
        };
        Status::new(code, msg)
    }
}

/// An error of the Lock and Election services. etcd runs them on its
/// embedded client, which turns the server's errors into plain Go errors
/// with the same text, so grpc-go answers every one of them with code
/// Unknown ("etcdserver: requested lease not found" included).
pub fn concurrency_status(e: ApiError) -> Status {
    Status::new(Code::Unknown, Status::from(e).message())
}

/// etcd's gRPC code of an auth error.
fn auth_code(e: &AuthError) -> Code {
    match e.class() {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::Unknown => Code::Unknown,
    }
}

/// etcd's status for tonic's refusal of an oversized message (see
/// [`super::gate`]).
pub(super) fn etcd_size_status(s: &Status) -> Option<Status> {
    let rest = s
        .message()
        .strip_prefix("Error, decoded message length too large: ")?;
    if s.code() != Code::OutOfRange {
        return None;
    }
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u64>().ok());
    let (found, limit) = (numbers.next()?, numbers.next()?);
    Some(Status::resource_exhausted(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_strings_and_codes() {
        let s: Status = ApiError::Mvcc(MvccError::Compacted).into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = ApiError::Mvcc(MvccError::FutureRevision).into();
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let s: Status = ApiError::Mvcc(MvccError::LeaseNotFound).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        let s: Status = ApiError::Mvcc(MvccError::LeaseExists).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        let s: Status = ApiError::Mvcc(MvccError::LeaseTtlTooLarge).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: too large lease TTL")
        );
        let s: Status = ApiError::Mvcc(MvccError::DuplicateKey).into();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )
        );
        let s: Status = ApiError::Mvcc(MvccError::EmptyKey).into();
        assert_eq!(s.message(), "etcdserver: key is not provided");
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 3145739 bytes, the limit is: 2097152 bytes",
        );
        let s = etcd_size_status(&tonic).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "grpc: received message larger than max (3145739 vs. 2097152)"
        );
        assert!(etcd_size_status(&ApiError::Mvcc(MvccError::Compacted).into()).is_none());
        let s = concurrency_status(ApiError::Mvcc(MvccError::LeaseNotFound));
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "etcdserver: requested lease not found")
        );
        let s = concurrency_status(ApiError::ElectionNoLeader);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "election: no leader")
        );
        let s: Status = ApiError::Auth(AuthError::PermissionDenied).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::PermissionDenied, "etcdserver: permission denied")
        );
        let s: Status = ApiError::Mvcc(MvccError::Auth(AuthError::InvalidAuthToken)).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        let s: Status = ApiError::Auth(AuthError::RootUserNotExist).into();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: root user does not exist"
            )
        );
        let s: Status = ApiError::RequestTooLarge.into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
    }
}
