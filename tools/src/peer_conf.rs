//! The configuration files `ringmq-bench compare` writes for the peer brokers it starts
//! (mosquitto.conf, rumqttd.toml): their listeners on 127.0.0.1 over plain TCP, TLS or
//! WebSocket and the limits the study sets (BENCHMARKS.md's Method lists them).

use crate::certs::ServerCerts;

/// mosquitto's configuration: a listener on `port` (TLS with `tls`'s certificate, or
/// WebSocket when `websocket`), and over WebSocket a plain one on `plain_port` first.
pub fn mosquitto(port: u16, plain_port: u16, tls: Option<&ServerCerts>, websocket: bool) -> String {
    // mosquitto 2.0.x will not start with only a WebSocket listener (libwebsockets built
    // without external poll support, eclipse-mosquitto/mosquitto#2284): a plain one elsewhere
    // first.
    let mut text = String::from("allow_anonymous true\nmax_queued_messages 100000\n");
    if websocket {
        text += &format!("listener {plain_port} 127.0.0.1\n");
    }
    text += &format!("listener {port} 127.0.0.1\n");
    if websocket || tls.is_some() {
        // Its default (Nagle on) holds each TLS handshake's second flight until the client's
        // delayed ACK, ~40 ms per connection (BENCHMARKS.md says so).
        text += "set_tcp_nodelay true\n";
    }
    if let Some(c) = tls {
        text += &format!(
            "certfile {}\nkeyfile {}\n",
            c.cert.display(),
            c.key.display()
        );
    }
    if websocket {
        text += "protocol websockets\n";
    }
    text
}

/// rumqttd's configuration: its MQTT 3.1.1 listener on `listen` (over TLS with `tls`'s
/// certificate, rustls, no client certificates), or when `websocket` its `ws` listener there
/// and the MQTT one on `plain`.
pub fn rumqttd(listen: &str, plain: &str, tls: Option<&ServerCerts>, websocket: bool) -> String {
    let connections = "max_payload_size = 20480\nmax_inflight_count = 100\nconnection_timeout_ms = 60000\ndynamic_filters = true\n";
    let mqtt = if websocket { plain } else { listen };
    let mut text = format!(
        "id = 0\n[router]\nid = 0\nmax_connections = 10010\nmax_outgoing_packet_count = 200\nmax_segment_size = 104857600\nmax_segment_count = 10\n[v4.1]\nname = \"v4-1\"\nlisten = \"{mqtt}\"\nnext_connection_delay_ms = 0\n[v4.1.connections]\n{connections}"
    );
    if let Some(c) = tls {
        text += &format!(
            "[v4.1.tls]\ncertpath = \"{}\"\nkeypath = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        );
    }
    if websocket {
        text += &format!("[ws.1]\nname = \"ws-1\"\nlisten = \"{listen}\"\nnext_connection_delay_ms = 0\n[ws.1.connections]\n{connections}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn certs() -> ServerCerts {
        ServerCerts {
            ca: PathBuf::from("/c/ca.pem"),
            cert: PathBuf::from("/c/server.pem"),
            key: PathBuf::from("/c/server.key"),
        }
    }

    #[test]
    fn rumqttd_listens_over_each_transport() {
        let plain = rumqttd("127.0.0.1:1", "127.0.0.1:2", None, false);
        assert!(plain.contains("[v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:1\""));
        assert!(
            !plain.contains("tls") && !plain.contains("[ws.1]"),
            "{plain}"
        );
        let tls = rumqttd("127.0.0.1:1", "127.0.0.1:2", Some(&certs()), false);
        assert!(tls.contains("listen = \"127.0.0.1:1\""), "{tls}");
        assert!(
            tls.contains("[v4.1.tls]\ncertpath = \"/c/server.pem\"\nkeypath = \"/c/server.key\"\n")
        );
        assert!(!tls.contains("capath"), "no client certificates: {tls}");
        let ws = rumqttd("127.0.0.1:1", "127.0.0.1:2", None, true);
        assert!(
            ws.contains("[v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:2\""),
            "{ws}"
        );
        assert!(
            ws.contains("[ws.1]\nname = \"ws-1\"\nlisten = \"127.0.0.1:1\""),
            "{ws}"
        );
        assert!(ws.contains("[ws.1.connections]\nmax_payload_size"), "{ws}");
    }

    #[test]
    fn mosquitto_keeps_a_plain_listener_first_over_websocket() {
        let ws = mosquitto(1, 2, None, true);
        let plain = ws.find("listener 2 ").expect("plain listener");
        assert!(plain < ws.find("listener 1 ").expect("ws listener"), "{ws}");
        assert!(ws.ends_with("protocol websockets\n"), "{ws}");
        let tls = mosquitto(1, 2, Some(&certs()), false);
        assert!(!tls.contains("listener 2 "), "{tls}");
        assert!(
            tls.contains("certfile /c/server.pem\nkeyfile /c/server.key\n"),
            "{tls}"
        );
    }
}
