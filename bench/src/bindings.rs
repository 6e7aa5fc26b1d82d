//! The bench's own connection to the server's database: what the bindings table says about a
//! run's devices (the storm and restart modes poll it), and the database's clock and processes.

use std::sync::{Arc, Mutex};

use postgres::types::ToSql;

/// One connection, used from a blocking thread.
pub struct Db {
    client: Arc<Mutex<postgres::Client>>,
}

/// The bindings of a run's devices (`deviceId LIKE pattern`) of the server's type.
const BINDINGS: &str = r#"FROM dashboard."connectionBindings" WHERE type::text = 'ws' AND "deviceId" LIKE $1"#;

impl Db {
    pub fn connect(url: &str) -> Result<Db, String> {
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| format!("--database-url: {e}"))?;
        Ok(Db { client: Arc::new(Mutex::new(client)) })
    }

    /// How many of the matching devices' bindings say connected.
    pub async fn connected(&self, pattern: &str) -> Result<i64, String> {
        let sql = format!(r#"SELECT count(*) {BINDINGS} AND "connectingStatus""#);
        self.count(sql, vec![pattern.to_string()]).await
    }

    /// How many say connected to `server`, written at or after `since` (the database's clock,
    /// as [`Db::clock`] gave it): rows left true by an instance that died do not count.
    pub async fn connected_since(&self, pattern: &str, server: &str, since: &str) -> Result<i64, String> {
        let sql = format!(
            r#"SELECT count(*) {BINDINGS} AND "connectingStatus" AND server = $2
               AND "lastConnectedAt" >= $3::text::timestamptz"#
        );
        self.count(sql, vec![pattern.to_string(), server.to_string(), since.to_string()]).await
    }

    /// The servers the matching bindings name.
    pub async fn servers(&self, pattern: &str) -> Result<Vec<String>, String> {
        let sql = format!("SELECT DISTINCT server {BINDINGS}");
        let rows = self.query(sql, vec![pattern.to_string()]).await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// The database's clock now, as text.
    pub async fn clock(&self) -> Result<String, String> {
        let rows = self.query("SELECT clock_timestamp()::text".into(), vec![]).await?;
        rows.first().map(|r| r.get::<_, String>(0)).ok_or_else(|| "no clock".into())
    }

    /// The PID of this connection's backend process.
    pub async fn backend_pid(&self) -> Result<u32, String> {
        let rows = self.query("SELECT pg_backend_pid()".into(), vec![]).await?;
        rows.first().map(|r| r.get::<_, i32>(0) as u32).ok_or_else(|| "no backend pid".into())
    }

    async fn count(&self, sql: String, params: Vec<String>) -> Result<i64, String> {
        let rows = self.query(sql, params).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)))
    }

    async fn query(&self, sql: String, params: Vec<String>) -> Result<Vec<postgres::Row>, String> {
        let client = self.client.clone();
        smol::unblock(move || {
            let mut client = client.lock().unwrap_or_else(|e| e.into_inner());
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            client.query(&sql, &params).map_err(|e| format!("bindings query: {e}"))
        })
        .await
    }
}
