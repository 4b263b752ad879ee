//! The SQLSTATE codes the proxy sends itself, named as PostgreSQL's `errcodes.txt` names
//! them, so that a reader sees what a refusal means and a search finds every use.

/// What a plain NOTICE carries (as `RAISE NOTICE` does).
pub const SUCCESSFUL_COMPLETION: &str = "00000";
pub const CONNECTION_FAILURE: &str = "08006";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const UNIQUE_VIOLATION: &str = "23505";
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const SYNTAX_ERROR: &str = "42601";
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// Also the proxy's code for a session closed at its policy's maximum age: PostgreSQL has
/// no code of its own for that, and this is what `pg_terminate_backend` sends.
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
pub const IO_ERROR: &str = "58030";
