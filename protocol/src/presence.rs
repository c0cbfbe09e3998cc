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
    /// More members follow the last listed: ask WHO again with this as
    /// `after` for the next page (SPEC.md 3.15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// What membership events a connection asked for in its HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberEvents {
    /// `true` (and the default): a `userJoined` or `userLeft` per change.
    #[default]
    On,
    /// `false`: none.
    Off,
    /// `"batched"`: per-change events in small rooms, and a `members`
    /// notice at most once a flush interval in big ones (SPEC.md 3.17).
    Batched,
}

impl Serialize for MemberEvents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MemberEvents::On => serializer.serialize_bool(true),
            MemberEvents::Off => serializer.serialize_bool(false),
            MemberEvents::Batched => serializer.serialize_str("batched"),
        }
    }
}

impl<'de> Deserialize<'de> for MemberEvents {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire<'a> {
            Flag(bool),
            Word(&'a str),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Flag(true) => Ok(MemberEvents::On),
            Wire::Flag(false) => Ok(MemberEvents::Off),
            Wire::Word("batched") => Ok(MemberEvents::Batched),
            Wire::Word(other) => Err(serde::de::Error::custom(format!(
                "memberEvents {other:?}: use true, false or \"batched\""
            ))),
        }
    }
}

/// The most changes a `members` notice lists; past it the notice only
/// counts them (`joins`, `leaves`), and a client that keeps a list asks
/// WHO again.
pub const MAX_NOTICE_CHANGES: usize = 100;

/// One change in a `members` notice, in the order the changes happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberNoticeChange {
    #[serde(rename = "type")]
    pub change: crate::MemberChange,
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Server → client MESSAGE with `"type":"members"`: the membership changes
/// of a big room since the last notice (or since the JOIN answer), to a
/// connection that asked for them batched (SPEC.md 3.17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersNotice {
    /// Always `"members"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub room: String,
    /// Members after the last change this notice covers.
    pub count: u64,
    /// Joins this notice covers, listed or not.
    pub joins: u64,
    /// Leaves this notice covers, listed or not.
    pub leaves: u64,
    /// The first changes, oldest first, at most [`MAX_NOTICE_CHANGES`]:
    /// all of them when their number is `joins + leaves`.
    pub changes: Vec<MemberNoticeChange>,
    /// Server time, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: u64,
}

impl MembersNotice {
    /// Whether every change is listed, so that a member list kept from the
    /// JOIN answer and earlier notices stays exact by applying them.
    pub fn complete(&self) -> bool {
        self.changes.len() as u64 == self.joins.saturating_add(self.leaves)
    }
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
