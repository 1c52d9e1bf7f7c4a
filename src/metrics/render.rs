//! Renders a [`StatsSnapshot`] as Prometheus text exposition format and as
//! the JSON the dashboard draws. Pure functions: no I/O, no clock.

use std::fmt::Write;
use std::time::Duration;

use msgtrans_shards::stats::{
    AcceptFailure, CloseKind, Protocol, ProtocolSnapshot, Refusal, ShardSnapshot, StatsSnapshot,
};

/// How one per-shard metric is read from a snapshot.
type Read = fn(&ShardSnapshot) -> u64;

/// Per-shard metrics with a `shard` label only: name, type, help, value.
const SHARD_METRICS: &[(&str, &str, &str, Read)] = &[
    ("msgtrans_sessions_open", "gauge", "Sessions open now.", |s| {
        s.sessions_open as u64
    }),
    (
        "msgtrans_sessions_opened_total",
        "counter",
        "Sessions ever opened.",
        |s| s.sessions_total,
    ),
    (
        "msgtrans_connections_refused_total",
        "counter",
        "Connections refused before they became sessions, every reason (see msgtrans_connections_refused_by_reason_total).",
        |s| s.refused,
    ),
    (
        "msgtrans_handshake_failures_total",
        "counter",
        "WebSocket, TLS or QUIC handshakes refused or timed out.",
        |s| s.handshake_failures,
    ),
    (
        "msgtrans_requests_in_flight",
        "gauge",
        "Requests sent to peers and waiting for their response.",
        |s| s.requests_in_flight,
    ),
    (
        "msgtrans_requests_timed_out_total",
        "counter",
        "Requests that got no response in time.",
        |s| s.request_timeouts,
    ),
    (
        "msgtrans_outbound_queue_packets",
        "gauge",
        "Packets queued for sessions and not yet written.",
        |s| s.queued_packets,
    ),
    (
        "msgtrans_outbound_queue_bytes",
        "gauge",
        "Bytes queued for sessions and not yet written.",
        |s| s.queued_bytes,
    ),
    (
        "msgtrans_ring_reads_without_buffer_total",
        "counter",
        "Shard-ring reads that found no provided buffer free (ENOBUFS) and were queued again.",
        |s| s.ring_reads_without_buffer,
    ),
    (
        "msgtrans_socket_fallbacks_total",
        "counter",
        "TCP and WebSocket sessions left on glommio's stream because their socket could not move onto the shard's epoll table or ring (out of fds).",
        |s| s.socket_fallbacks,
    ),
    (
        "msgtrans_buffer_pool_hits_total",
        "counter",
        "Buffers served from the shard's pool.",
        |s| s.pool.hits,
    ),
    (
        "msgtrans_buffer_pool_misses_total",
        "counter",
        "Buffers the pool had to allocate.",
        |s| s.pool.misses,
    ),
    (
        "msgtrans_buffer_pool_remote_returns_total",
        "counter",
        "Buffers returned to the pool from another thread.",
        |s| s.pool.remote_returns,
    ),
    (
        "msgtrans_buffer_pool_dropped_total",
        "counter",
        "Buffers freed because their pool tier was full or they were too big.",
        |s| s.pool.dropped,
    ),
    (
        "msgtrans_inbox_commands_total",
        "counter",
        "Commands the shard took from its inbox (from the application and other shards).",
        |s| s.mesh_in,
    ),
    (
        "msgtrans_cross_shard_received_total",
        "counter",
        "Packets other shards relayed to this one.",
        |s| s.cross_shard_in,
    ),
    (
        "msgtrans_cross_shard_sent_total",
        "counter",
        "Packets this shard relayed to other shards.",
        |s| s.cross_shard_out,
    ),
    (
        "msgtrans_quic_datagrams_relayed_total",
        "counter",
        "QUIC datagrams this shard received for a connection another shard owns, and relayed to it.",
        |s| s.quic_forwarded,
    ),
    (
        "msgtrans_quic_retries_total",
        "counter",
        "QUIC Initials answered with a Retry (address validation, past the half-open threshold).",
        |s| s.quic_retries,
    ),
    (
        "msgtrans_doorbell_wakeups_total",
        "counter",
        "Times a sleeping shard was woken for its inbox.",
        |s| s.wakeups,
    ),
    (
        "msgtrans_events_abandoned_total",
        "counter",
        "Events given up at shutdown because the application's queue stayed full.",
        |s| s.events_abandoned,
    ),
];

/// How one per-protocol metric is read.
type ReadProtocol = fn(&ProtocolSnapshot) -> u64;

/// Per-shard, per-protocol metrics (all counters): name, help, value.
const PROTOCOL_METRICS: &[(&str, &str, ReadProtocol)] = &[
    ("msgtrans_messages_received_total", "Packets received.", |p| p.msgs_in),
    ("msgtrans_messages_sent_total", "Packets queued for sending.", |p| {
        p.msgs_out
    }),
    (
        "msgtrans_received_bytes_total",
        "Bytes read from sessions (after TLS decryption).",
        |p| p.bytes_in,
    ),
    (
        "msgtrans_sent_bytes_total",
        "Bytes written to sessions (before TLS encryption).",
        |p| p.bytes_out,
    ),
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition of `stats`: one family per metric, one
/// sample per shard (and per protocol or close reason where split).
pub fn prometheus(stats: &StatsSnapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    family(&mut out, "msgtrans_shards", "gauge", "Shards the server runs.");
    let _ = writeln!(out, "msgtrans_shards {}", stats.shards.len());
    for (name, kind, help, read) in SHARD_METRICS {
        family(&mut out, name, kind, help);
        for s in &stats.shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, read(s));
        }
    }
    for (name, help, read) in PROTOCOL_METRICS {
        family(&mut out, name, "counter", help);
        for s in &stats.shards {
            for p in Protocol::ALL {
                let v = read(&s.protocol(p));
                let _ = writeln!(out, "{name}{{shard=\"{}\",protocol=\"{}\"}} {v}", s.shard, p.label());
            }
        }
    }
    let name = "msgtrans_connections_refused_by_reason_total";
    family(
        &mut out,
        name,
        "counter",
        "Connections refused before they became sessions, by reason.",
    );
    for s in &stats.shards {
        for r in Refusal::ALL {
            let v = s.refusals_of(r);
            let _ = writeln!(out, "{name}{{shard=\"{}\",reason=\"{}\"}} {v}", s.shard, r.label());
        }
    }
    let name = "msgtrans_accept_failures_total";
    family(
        &mut out,
        name,
        "counter",
        "Failed accepts on TCP and WebSocket listeners, by cause (fd_limit: EMFILE/ENFILE); each 10 ms retry counts.",
    );
    for s in &stats.shards {
        for a in AcceptFailure::ALL {
            let v = s.accept_failures_of(a);
            let _ = writeln!(out, "{name}{{shard=\"{}\",reason=\"{}\"}} {v}", s.shard, a.label());
        }
    }
    let name = "msgtrans_sessions_closed_total";
    family(&mut out, name, "counter", "Sessions closed, by close reason.");
    for s in &stats.shards {
        for k in CloseKind::ALL {
            let v = s.closes_of(k);
            let _ = writeln!(out, "{name}{{shard=\"{}\",reason=\"{}\"}} {v}", s.shard, k.label());
        }
    }
    out
}

fn json_shard(out: &mut String, s: &ShardSnapshot) {
    let _ = write!(
        out,
        "{{\"shard\":{},\"sessions_open\":{},\"sessions_total\":{},\"refused\":{},\"handshake_failures\":{},\
         \"msgs_in\":{},\"msgs_out\":{},\"bytes_in\":{},\"bytes_out\":{},\
         \"requests_in_flight\":{},\"request_timeouts\":{},\"queued_packets\":{},\"queued_bytes\":{},\
         \"inbox_commands\":{},\"cross_shard_in\":{},\"cross_shard_out\":{},\"wakeups\":{},\"events_abandoned\":{},\
         \"ring_reads_without_buffer\":{},\"socket_fallbacks\":{},\
         \"pool\":{{\"hits\":{},\"misses\":{},\"remote_returns\":{},\"dropped\":{}}},\"protocols\":{{",
        s.shard,
        s.sessions_open,
        s.sessions_total,
        s.refused,
        s.handshake_failures,
        s.msgs_in,
        s.msgs_out,
        s.bytes_in,
        s.bytes_out,
        s.requests_in_flight,
        s.request_timeouts,
        s.queued_packets,
        s.queued_bytes,
        s.mesh_in,
        s.cross_shard_in,
        s.cross_shard_out,
        s.wakeups,
        s.events_abandoned,
        s.ring_reads_without_buffer,
        s.socket_fallbacks,
        s.pool.hits,
        s.pool.misses,
        s.pool.remote_returns,
        s.pool.dropped,
    );
    for (i, p) in Protocol::ALL.iter().enumerate() {
        let t = s.protocol(*p);
        let _ = write!(
            out,
            "{}\"{}\":{{\"msgs_in\":{},\"msgs_out\":{},\"bytes_in\":{},\"bytes_out\":{}}}",
            if i > 0 { "," } else { "" },
            p.label(),
            t.msgs_in,
            t.msgs_out,
            t.bytes_in,
            t.bytes_out
        );
    }
    out.push_str("},\"closes\":{");
    for (i, k) in CloseKind::ALL.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(out, "{sep}\"{}\":{}", k.label(), s.closes_of(*k));
    }
    out.push_str("},\"refusals\":{");
    for (i, r) in Refusal::ALL.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(out, "{sep}\"{}\":{}", r.label(), s.refusals_of(*r));
    }
    out.push_str("},\"accept_failures\":{");
    for (i, a) in AcceptFailure::ALL.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(out, "{sep}\"{}\":{}", a.label(), s.accept_failures_of(*a));
    }
    out.push_str("}}");
}

/// The JSON the dashboard polls: every shard, the total, and the
/// endpoint's uptime (labels are fixed ASCII names, so nothing needs
/// escaping).
pub fn json(stats: &StatsSnapshot, uptime: Duration) -> String {
    let mut out = String::with_capacity(2048 * (stats.shards.len() + 1));
    let _ = write!(out, "{{\"uptime_s\":{:.3},\"shards\":[", uptime.as_secs_f64());
    for (i, s) in stats.shards.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_shard(&mut out, s);
    }
    out.push_str("],\"total\":");
    json_shard(&mut out, &stats.total);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsSnapshot {
        let mut a = ShardSnapshot {
            sessions_open: 2,
            ..Default::default()
        };
        a.protocols[Protocol::Wss.index()].msgs_in = 5;
        a.closes[CloseKind::IdleTimeout.index()] = 3;
        a.accept_failures[AcceptFailure::FdLimit.index()] = 7;
        let b = ShardSnapshot {
            shard: 1,
            ..Default::default()
        };
        StatsSnapshot::from_shards(vec![a, b])
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = prometheus(&sample());
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} has no TYPE line before it");
            }
        }
        assert!(text.contains("msgtrans_messages_received_total{shard=\"0\",protocol=\"wss\"} 5\n"));
        assert!(text.contains("msgtrans_sessions_closed_total{shard=\"0\",reason=\"idle_timeout\"} 3\n"));
        assert!(text.contains("msgtrans_sessions_open{shard=\"1\"} 0\n"));
        assert!(text.contains("msgtrans_accept_failures_total{shard=\"0\",reason=\"fd_limit\"} 7\n"));
        assert!(text.contains("msgtrans_accept_failures_total{shard=\"1\",reason=\"other\"} 0\n"));
    }

    #[test]
    fn json_carries_each_shard_and_the_total() {
        let j = json(&sample(), Duration::from_millis(1500));
        assert!(j.starts_with("{\"uptime_s\":1.500,\"shards\":[{\"shard\":0,\"sessions_open\":2,"));
        assert!(j.contains("\"total\":{\"shard\":2,\"sessions_open\":2,"));
        assert!(j.contains("\"wss\":{\"msgs_in\":5,"));
        assert!(j.contains("\"idle_timeout\":3"));
        assert!(j.contains("\"accept_failures\":{\"fd_limit\":7,\"memory\":0,\"other\":0}"));
    }
}
