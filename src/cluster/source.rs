//! Where the Redis primary is: the `cluster.redis` URL itself, or, with
//! `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME`, whatever the Sentinels
//! name as that master's primary at the moment of each (re)connect. After a failover the old
//! primary's connections fail, the session ends, and the next connect asks the Sentinels again,
//! so the relay is interrupted for about the failover itself plus one reconnect backoff.
//!
//! This file must not hold connections: it only says where the primary is.

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, RedisConnectionInfo, RedisResult};
use tokio::sync::Mutex;

use crate::config::SentinelUrl;

pub enum Source {
    Direct(Client),
    /// The lock: `SentinelClient` asks with `&mut self`; only the worker and the liveness task
    /// ask, once per (re)connect.
    Sentinel(Mutex<SentinelClient>),
}

impl Source {
    pub fn open(url: &str) -> RedisResult<Source> {
        let Some(sentinel) = SentinelUrl::parse(url) else {
            return Ok(Source::Direct(Client::open(url)?));
        };
        let mut redis = RedisConnectionInfo::default();
        if let Some(password) = &sentinel.password {
            redis = redis.set_password(password);
        }
        let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        let sentinels: Vec<String> = sentinel
            .hosts
            .iter()
            .map(|h| format!("redis://{h}"))
            .collect();
        let client = SentinelClient::build(
            sentinels,
            sentinel.master,
            Some(info),
            SentinelServerType::Master,
        )?;
        Ok(Source::Sentinel(Mutex::new(client)))
    }

    /// A client for the current primary.
    pub async fn client(&self) -> RedisResult<Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}
