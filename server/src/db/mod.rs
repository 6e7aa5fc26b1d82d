//! PostgreSQL plumbing shared by the binding store and the cluster: a connection that comes
//! back by itself, and every SQL statement the server runs, in one file.

pub mod connection;
pub mod sql;
