//! A log written before the compact records existed (commit 433fa08: every record rkyv, one
//! `Enqueue` and `Done` per recipient) still opens to the same state, and new records can be
//! added to it. The fixture holds one record of every kind of that version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use storage::compact::MessageRef;
use storage::embedded::log::{Log, LogConfig};
use storage::record::Record;

fn fixture_copy() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0-log");
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("compat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("00000001.log"), dir.join("00000001.log")).unwrap();
    dir
}

#[test]
fn a_log_of_the_previous_format_opens_to_its_state_and_takes_new_records() {
    let dir = fixture_copy();
    let (mut log, recovery) = Log::open(LogConfig::new(dir.clone())).unwrap();
    assert_eq!(recovery.records, 19);
    assert!(recovery.truncated.is_none());
    let check = |log: &Log| {
        let state = log.state();
        assert_eq!(state.sessions.len(), 1, "the ended session is gone");
        let s = &state.sessions["dev-1"];
        assert_eq!(s.expiry, 3600);
        assert_eq!(s.subscriptions.len(), 1);
        let sub = &s.subscriptions["a/#"];
        assert_eq!((sub.options, sub.sub_id), (1, 7));
        assert_eq!(
            s.qos2_received.iter().copied().collect::<Vec<_>>(),
            vec![41]
        );
        let queued: Vec<_> = s.messages.iter().map(|(seq, m)| (seq, m.clone())).collect();
        assert_eq!(queued.len(), 2, "message 1 is done");
        let (two, three) = (&queued[0], &queued[1]);
        assert_eq!(two.0, 2);
        let m = state.message(&two.1).unwrap();
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            ("a/2", &b"two"[..], 2)
        );
        assert_eq!((two.1.packet_id, two.1.released), (Some(11), false));
        assert_eq!(three.0, 3);
        assert_eq!((three.1.packet_id, three.1.released), (Some(12), true));
        assert_eq!(state.message(&three.1).unwrap().payload, b"three");
        let retained: Vec<_> = state.retained.keys().cloned().collect();
        assert_eq!(retained, vec!["r/kept".to_string()]);
        assert_eq!(state.retained["r/kept"].1, 100);
    };
    check(&log);
    // New records after the old ones: a message written once for two sessions, a batch of
    // acknowledgements; then the whole log replays.
    log.append(&Record::Session {
        client: "dev-2".into(),
        expiry: 60,
    })
    .unwrap();
    let body = MessageRef {
        topic: "a/4",
        properties: &[],
        expires_at_ms: 0,
        payload: b"four",
    };
    log.append_message("dev-1", 10, 1, false, &body).unwrap();
    log.append(&Record::Ref {
        client: "dev-2".into(),
        id: 10,
        qos: 1,
        retain: false,
    })
    .unwrap();
    log.append_acked("dev-1", &[2]).unwrap();
    log.commit().unwrap();
    drop(log);
    let (log, recovery) = Log::open(LogConfig::new(dir.clone())).unwrap();
    assert_eq!(recovery.records, 23);
    // The legacy segment took the new records in its own format: nothing to cut.
    assert!(recovery.truncated.is_none());
    let s1 = &log.state().sessions["dev-1"];
    assert_eq!(
        s1.messages.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        vec![3, 10]
    );
    let s2 = &log.state().sessions["dev-2"];
    let (seq, m) = s2.messages.iter().next().unwrap();
    assert_eq!(
        (seq, log.state().message(m).unwrap().payload),
        (10, b"four".to_vec())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
