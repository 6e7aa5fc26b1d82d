//! PostgreSQL plumbing shared by the binding store and the cluster: a connection that comes
//! back by itself, every SQL statement the server runs, in one file, and TLS to the database
//! (libpq's `sslmode` read by us, rustls doing it).

pub mod channel_binding;
pub mod connection;
pub mod sql;
pub mod sslmode;
pub mod tls;
pub mod tls_connect;
