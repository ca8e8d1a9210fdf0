//! The HTTP server's counters, declared once: each one's field (its key in `/api/status`'s
//! `http`), its Prometheus family and help come from one table, so `/api/status` and `/metrics`
//! cannot drift apart (as `connections_evicted` once did).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A Prometheus family of the registry: name (after `camjobd_`), type, help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The name after `camjobd_`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The HELP line.
    pub help: &'static str,
}

/// Declares [`Stats`] (the live atomics), [`Counts`] (their values, serialised for
/// `/api/status`) and each one's [`Family`], from one table.
macro_rules! registry {
    ($($(#[doc = $doc:literal])* $field:ident: $kind:ident $metric:literal $help:literal;)*) => {
        /// Counters of the server, shared with whoever reports them. All only grow except the
        /// gauges `connections_active` and `streams_active`.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $field: AtomicU64,)*
        }

        /// The counters' values at one moment: `/api/status`'s `http`.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct Counts {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Stats {
            /// The values now.
            pub fn counts(&self) -> Counts {
                Counts { $($field: self.$field.load(Relaxed),)* }
            }
        }

        impl Counts {
            /// Each counter's family and value, in the table's order.
            pub fn families(&self) -> impl Iterator<Item = (Family, u64)> {
                [$((Family { name: $metric, kind: stringify!($kind), help: $help }, self.$field),)*].into_iter()
            }
        }
    };
}

registry! {
    /// Connections returned by accept() (including those then rejected).
    connections_accepted: counter "http_connections_accepted_total" "Connections accepted.";
    /// Connections answered 503 because `max_connections` were open and all busy.
    connections_rejected: counter "http_connections_rejected_total"
        "Connections answered 503 because http.max_connections were open.";
    /// Idle connections closed to make room for a new one at `max_connections`.
    connections_evicted: counter "http_connections_evicted_total"
        "Idle connections closed to make room for a new one at http.max_connections.";
    /// Connections open now.
    connections_active: gauge "http_connections_active" "Connections being served.";
    /// Requests handed to the handler.
    requests: counter "http_requests_total" "Requests handled.";
    /// Requests refused by the server itself or by hyper's parser: 400, 411, 413, 431.
    bad_requests: counter "http_bad_requests_total" "Requests refused as malformed or too large.";
    /// Heads or bodies not received in time, and clients that took no byte for
    /// `write_timeout_ms`.
    timeouts: counter "http_timeouts_total" "Connections closed for being too slow.";
    /// Failed accept() calls (EMFILE, ENFILE, ECONNABORTED, ...).
    accept_errors: counter "http_accept_errors_total" "Failed accept() calls (EMFILE and the like).";
    /// Handler calls that panicked (each answered 500).
    handler_panics: counter "http_handler_panics_total" "Requests answered 500 by a panic.";
    /// MJPEG stream clients connected now.
    streams_active: gauge "http_streams_active" "MJPEG stream clients now.";
    /// Stream requests answered 503 because `max_stream_clients` were streaming.
    streams_rejected: counter "http_streams_rejected_total" "Stream requests answered 503 (http.max_stream_clients).";
    /// Camera frames sent to stream clients (all clients together).
    stream_frames: counter "http_stream_frames_total" "Frames sent to stream clients.";
    /// Placeholder frames sent while a camera was not delivering.
    stream_placeholders: counter "http_stream_placeholders_total"
        "Placeholder frames sent while a camera delivered nothing.";
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_json_counter_is_its_family_and_the_other_way_round() {
        let stats = Stats::default();
        bump(&stats.connections_evicted);
        let counts = stats.counts();
        let json = serde_json::to_value(counts).unwrap();
        let keys = json.as_object().unwrap();
        let families: Vec<_> = counts.families().collect();
        assert_eq!(keys.len(), families.len());
        for (key, value) in keys {
            let names = [format!("http_{key}"), format!("http_{key}_total")];
            let found = families.iter().find(|(f, _)| names.iter().any(|n| n == f.name));
            let (family, n) = found.unwrap_or_else(|| panic!("{key} has no family"));
            assert_eq!(value.as_u64(), Some(*n), "{key}");
            assert_eq!(family.kind == "counter", family.name.ends_with("_total"), "{family:?}");
        }
        assert_eq!(json["connections_evicted"], 1);
    }
}
