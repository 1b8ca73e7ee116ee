use thiserror::Error;

/// Everything that can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use postgres://… or sqlite://PATH")]
    InvalidUrl(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether trying the same call again may succeed: the database was away,
    /// or a transaction lost a deadlock or serialization race.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(err) => is_transient(err),
            _ => false,
        }
    }
}

pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected, admin shutdown family,
            // cannot_connect_now; SQLITE_BUSY and SQLITE_LOCKED.
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "5" | "6" | "517")
        ),
        _ => false,
    }
}
