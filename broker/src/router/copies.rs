//! From the subscriptions a topic matched to the copies sent: one copy per session, carrying
//! the identifiers of all its matching subscriptions, at the highest QoS among them (MQTT 5
//! 3.3.4); a session gets a second copy only when its matching subscriptions disagree on
//! what the copy looks like (retain as published on a retained message). No-local
//! subscriptions are skipped for the session that published.

use net::codec::QoS;

use super::LocalMatch;
use crate::ids::SessionId;
use crate::session::SubIds;

/// One copy of a message for one local session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCopy {
    /// The session.
    pub session: SessionId,
    /// The highest QoS of the subscriptions it stands for.
    pub qos: QoS,
    /// The RETAIN flag it goes out with.
    pub retain: bool,
    /// Their subscription identifiers.
    pub sub_ids: SubIds,
}

/// Groups `matches` (sorted by session, as `Router::matches` leaves them) into copies,
/// handed to `each` in session order. `from` is the publishing session (no local),
/// `retained` the message's RETAIN flag. A session matched once (the usual case) costs no
/// grouping.
pub fn local_copies(
    matches: &[LocalMatch],
    from: Option<SessionId>,
    retained: bool,
    mut each: impl FnMut(LocalCopy),
) {
    let mut rest = matches;
    while let Some(&(session, ..)) = rest.first() {
        let n = rest.iter().take_while(|m| m.0 == session).count();
        let (run, after) = rest.split_at(n);
        rest = after;
        if let [(_, options, sub_id)] = run {
            // Matched once: one copy as it is.
            if !(options.no_local && Some(session) == from) {
                each(LocalCopy {
                    session,
                    qos: options.qos,
                    retain: options.retain_as_published && retained,
                    sub_ids: SubIds::one(*sub_id),
                });
            }
            continue;
        }
        // At most two copies, one per RETAIN flag: (highest QoS, identifiers) of each.
        let mut by_flag: [(Option<QoS>, Vec<u32>); 2] = [(None, Vec::new()), (None, Vec::new())];
        for &(_, options, sub_id) in run {
            if options.no_local && Some(session) == from {
                continue;
            }
            let retain = options.retain_as_published && retained;
            let (qos, ids) = if retain {
                &mut by_flag[1]
            } else {
                &mut by_flag[0]
            };
            *qos = Some(qos.map_or(options.qos, |q| q.max(options.qos)));
            ids.push(sub_id);
        }
        let [(plain_qos, plain_ids), (kept_qos, kept_ids)] = by_flag;
        for (retain, qos, ids) in [(true, kept_qos, kept_ids), (false, plain_qos, plain_ids)] {
            if let Some(qos) = qos {
                each(LocalCopy {
                    session,
                    qos,
                    retain,
                    sub_ids: SubIds::from_ids(ids),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use net::codec::{QoS, SubscriptionOptions};

    use super::*;

    fn m(session: u32, qos: QoS, sub_id: u32, no_local: bool, rap: bool) -> LocalMatch {
        let mut o = SubscriptionOptions::qos(qos);
        o.no_local = no_local;
        o.retain_as_published = rap;
        (SessionId(session), o, sub_id)
    }

    #[test]
    fn one_copy_per_session_with_every_identifier_at_the_highest_qos() {
        let matches = [
            m(1, QoS::AtMostOnce, 2, false, false),
            m(1, QoS::ExactlyOnce, 5, false, false),
            m(1, QoS::AtLeastOnce, 0, false, false),
            m(2, QoS::AtLeastOnce, 0, false, false),
        ];
        let mut out = Vec::new();
        local_copies(&matches, None, false, |c| out.push(c));
        assert_eq!(
            out,
            vec![
                LocalCopy {
                    session: SessionId(1),
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    sub_ids: SubIds::Many(vec![2, 5].into()),
                },
                LocalCopy {
                    session: SessionId(2),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    sub_ids: SubIds::None,
                },
            ]
        );
    }

    #[test]
    fn differing_retain_as_published_on_a_retained_message_makes_two_copies() {
        let matches = [
            m(1, QoS::AtLeastOnce, 1, false, true),
            m(1, QoS::AtLeastOnce, 2, false, false),
            m(1, QoS::AtMostOnce, 3, false, true),
        ];
        let mut out = Vec::new();
        local_copies(&matches, None, true, |c| out.push(c));
        let got: Vec<_> = out
            .iter()
            .map(|c| (c.retain, c.sub_ids.as_slice().to_vec()))
            .collect();
        assert_eq!(got, vec![(true, vec![1, 3]), (false, vec![2])]);
        // Not retained: the flag is off either way, one copy.
        out.clear();
        local_copies(&matches, None, false, |c| out.push(c));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sub_ids.as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn no_local_skips_only_the_publishers_own_subscriptions() {
        let matches = [
            m(1, QoS::AtLeastOnce, 1, true, false),
            m(1, QoS::AtMostOnce, 2, false, false),
            m(2, QoS::AtLeastOnce, 3, true, false),
        ];
        let mut out = Vec::new();
        local_copies(&matches, Some(SessionId(1)), false, |c| out.push(c));
        let got: Vec<_> = out
            .iter()
            .map(|c| (c.session.0, c.qos, c.sub_ids.as_slice().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, QoS::AtMostOnce, vec![2]),
                (2, QoS::AtLeastOnce, vec![3])
            ]
        );
    }
}
