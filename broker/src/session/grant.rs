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

    /// The set of `ids` (0 and repeats dropped).
    pub fn from_ids(mut ids: Vec<u32>) -> Self {
        ids.retain(|&id| id != 0);
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [] => Self::None,
            [one] => Self::One(*one),
            _ => Self::Many(ids.into()),
        }
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
        assert!(SubIds::one(0).is_empty());
        assert!(SubIds::from_ids(vec![0, 0]).is_empty());
        assert_eq!(SubIds::from_ids(vec![7, 0, 7]), SubIds::One(7));
        let ids = SubIds::from_ids(vec![7, 0, 3, 7, 5]);
        assert_eq!(ids.as_slice(), &[3, 5, 7]);
    }
}
