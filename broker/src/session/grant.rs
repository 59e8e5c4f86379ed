//! How one message goes out to one session: the [`Grant`] (QoS, RETAIN flag, the identifiers
//! of the subscriptions that matched, shared group) and [`SubIds`], the identifier set
//! carried without allocating in the usual cases (none or one).

use std::sync::Arc;

use bytestring::ByteString;
use net::codec::QoS;

/// The subscription identifiers a copy carries (MQTT 5 3.3.4: one copy may carry every
/// identifier of the session's matching subscriptions). Never holds 0; ascending, unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SubIds {
    /// No identifier.
    #[default]
    None,
    /// One (non-zero) identifier.
    One(u32),
    /// Several, ascending.
    Many(Arc<[u32]>),
}

impl SubIds {
    /// The set holding `id` alone (empty for 0).
    pub fn one(id: u32) -> Self {
        if id == 0 {
            Self::None
        } else {
            Self::One(id)
        }
    }

    /// True when there is no identifier.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The identifiers, ascending.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            Self::None => &[],
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }

    /// Adds `id` (0 and repeats are ignored).
    pub fn add(&mut self, id: u32) {
        if id == 0 || self.as_slice().contains(&id) {
            return;
        }
        let mut ids = self.as_slice().to_vec();
        ids.push(id);
        ids.sort_unstable();
        *self = match ids.as_slice() {
            [one] => Self::One(*one),
            _ => Self::Many(ids.into()),
        };
        debug_assert!(!self.as_slice().contains(&0));
    }
}

/// How a message goes out to this session: the QoS and RETAIN flag it is sent with, the
/// identifiers of the subscriptions that matched, and its shared group if any.
#[derive(Debug, Clone)]
pub struct Grant {
    /// QoS granted (the publish's, capped by the highest of the matching subscriptions').
    pub qos: QoS,
    /// RETAIN flag on the way out.
    pub retain: bool,
    /// Subscription identifiers to send with it (MQTT 5).
    pub sub_ids: SubIds,
    /// When it came through a shared subscription: the group's full filter
    /// (`$share/group/filter`), so an unfinished copy can go to another member if this
    /// session ends.
    pub shared: Option<ByteString>,
}

impl Grant {
    /// A grant with only a QoS.
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            retain: false,
            sub_ids: SubIds::None,
            shared: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SubIds;

    #[test]
    fn identifiers_stay_ascending_unique_and_non_zero() {
        let mut ids = SubIds::one(0);
        assert!(ids.is_empty());
        ids.add(7);
        assert_eq!(ids, SubIds::One(7));
        ids.add(0);
        ids.add(3);
        ids.add(7);
        ids.add(5);
        assert_eq!(ids.as_slice(), &[3, 5, 7]);
    }
}
