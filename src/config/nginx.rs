//! What `--check-config` says about running behind nginx: the upstream and location block that
//! fit this configuration, and a warning when the heartbeat would not keep nginx from cutting
//! idle sockets (the most common WebSocket-behind-nginx failure).
//!
//! Advice only: it must not change or refuse a configuration (that is `validate`'s job).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Config;

/// nginx's default `proxy_read_timeout`.
const NGINX_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The shipped location snippet, the same bytes as `nginx/wsline-location.conf`.
const LOCATION: &str = include_str!("../../nginx/wsline-location.conf");

/// Warnings for a configuration that passed validation but would misbehave behind nginx.
pub fn warnings(config: &Config) -> Vec<String> {
    let ping = config.heartbeat.ping_interval;
    let mut out = Vec::new();
    if ping >= NGINX_READ_TIMEOUT {
        out.push(format!(
            "heartbeat.ping_interval ({}) is not below nginx's default proxy_read_timeout (60s): \
             behind nginx, idle clients will be cut off; lower it or raise proxy_read_timeout above it",
            humantime::format_duration(ping)
        ));
    }
    out
}

/// The nginx upstream and location for this configuration, ready to paste.
pub fn snippet(config: &Config) -> String {
    let addr = config
        .server
        .listen
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3456)));
    // nginx on the same host reaches a wildcard listener through loopback.
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    // The block itself, without the snippet's installation notes above it.
    let mut location = LOCATION[LOCATION.find("location /wsline/").unwrap_or(0)..].to_owned();
    if !config.tls.enabled {
        location = location.replace("proxy_pass https://wsline/;", "proxy_pass http://wsline/;");
    }
    format!(
        "# nginx for this configuration. In the http {{ }} block (with nginx/wsline.conf):\n\
         upstream wsline {{\n    server {target};\n}}\n\n\
         # In your server {{ }} block:\n{location}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippet_points_at_the_configured_port_and_scheme() {
        let mut c =
            Config::from_toml("[server]\nlisten = \"0.0.0.0:4000\"\n[tls]\nself_signed = true\n")
                .unwrap();
        let s = snippet(&c);
        assert!(s.contains("server 127.0.0.1:4000;"), "{s}");
        assert!(s.contains("proxy_pass https://wsline/;"), "{s}");
        c.tls.enabled = false;
        assert!(snippet(&c).contains("proxy_pass http://wsline/;"));
    }

    #[test]
    fn a_slow_heartbeat_is_warned_about() {
        let mut c = Config::from_toml("[tls]\nself_signed = true\n").unwrap();
        assert!(warnings(&c).is_empty());
        c.heartbeat.ping_interval = Duration::from_secs(60);
        assert!(warnings(&c)[0].contains("proxy_read_timeout"));
    }
}
