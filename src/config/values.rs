//! The parsers of single values: durations (`"30s"`), sizes (`"64KiB"` or bytes), listen
//! addresses, CIDR blocks, and `redis+sentinel://` URLs.
//!
//! Each says in its error what to write instead, because that error reaches the user at the
//! value's line and column. Parsing only: whether a parsed value is in range is `validate`'s job.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME`: the Sentinels to ask for
/// the primary of `MASTER_NAME` (the password is the primary's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub hosts: Vec<String>,
    pub master: String,
    pub password: Option<String>,
}

impl SentinelUrl {
    /// `None` when `url` is not a well-formed `redis+sentinel://` URL.
    pub fn parse(url: &str) -> Option<SentinelUrl> {
        let rest = url.strip_prefix("redis+sentinel://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_owned());
        let (hosts, master) = rest.split_once('/')?;
        let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        let valid_host = |h: &String| {
            h.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        let master = master.trim_end_matches('/');
        (hosts.iter().all(valid_host) && !master.is_empty() && !master.contains('/')).then(|| {
            SentinelUrl {
                hosts,
                master: master.to_owned(),
                password,
            }
        })
    }
}

pub(super) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    let Raw::Text(text) = Raw::deserialize(de)? else {
        return Err(serde::de::Error::custom(
            "a duration is a string with a unit, like \"30s\", \"250ms\" or \"2m\"",
        ));
    };
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}): write it like \"30s\", \"250ms\" or \"2m\""
        ))
    })
}

pub(super) fn size<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!(
            "invalid size {shown}: write a number of bytes or a string like \"64KiB\" or \"4MiB\""
        ))
    };
    match Raw::deserialize(de).map_err(|_| invalid("(not a number or string)".into()))? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| invalid(format!("{text:?}"))),
    }
}

/// [`size`] for an override that may be absent.
pub(super) fn some_size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    size(de).map(Some)
}

pub(super) fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let list = match Raw::deserialize(de)
        .map_err(|_| serde::de::Error::custom("expected an address string or a list of them"))?
    {
        Raw::One(a) => vec![a],
        Raw::Many(v) => v,
    };
    list.iter()
        .map(|a| {
            a.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid listen address {a:?}: write IP:PORT, like \"0.0.0.0:3456\" or \"[::]:3456\""
                ))
            })
        })
        .collect()
}

/// CIDR blocks; a bare address means that one host. Every invalid entry is named at once.
pub(super) fn cidrs<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(de)?;
    let parse = |s: &String| {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
    };
    let invalid: Vec<String> = list
        .iter()
        .filter(|s| parse(s).is_err())
        .map(|s| format!("{s:?}"))
        .collect();
    if !invalid.is_empty() {
        return Err(serde::de::Error::custom(format!(
            "invalid address block {}: write it like \"10.0.0.0/8\" or \"::1\"",
            invalid.join(", ")
        )));
    }
    Ok(list.iter().filter_map(|s| parse(s).ok()).collect())
}
