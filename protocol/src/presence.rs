//! Who is in a room, and messages to one user or connection (SPEC.md 3.3,
//! 3.15, 3.16).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::payload::RequestId;

/// The most members a JOIN or WHO answer lists; `members` still counts
/// them all. With the longest names a list of 100 is about 80 KiB, so the
/// server lists fewer when its `maxFrameSize` is smaller than the answer
/// would be.
pub const MAX_MEMBER_LIST: usize = 100;

/// One member of a room, as a JOIN or WHO answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub connection_id: String,
    /// Its HELLO `userId`; absent when it gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Server → client answer to WHO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoReply {
    pub room: String,
    /// Members now (0: no such room).
    pub members: u64,
    /// The members, oldest first, at most [`MAX_MEMBER_LIST`].
    pub member_list: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Whom a direct MESSAGE is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// Every connection of this user.
    User(Cow<'a, str>),
    /// One connection, by its `connectionId`.
    Connection(Cow<'a, str>),
}

/// Server → client MESSAGE with `"type":"direct"`: a message sent to this
/// connection or its user, not to a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direct<'a> {
    /// Always `"direct"`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub from: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub content: &'a RawValue,
    #[serde(default)]
    pub timestamp: u64,
}
