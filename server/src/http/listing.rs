//! `/connz` and `/roomz`: the live connections and rooms as JSON, in pages,
//! in the manner of NATS's monitoring endpoints.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::shared::Shared;

/// Items in a page unless `limit` asks otherwise.
const DEFAULT_LIMIT: usize = 100;
/// The most items one page holds, whatever `limit` asks: bounds the answer.
pub(super) const MAX_LIMIT: usize = 1000;
/// Room names listed per connection at most; `rooms_total` has the count.
pub(super) const MAX_ROOMS_LISTED: usize = 64;

/// Which items to list: `?offset=&limit=`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    offset: usize,
    limit: usize,
}

/// A query that is not `offset` and `limit` as numbers.
#[derive(Debug)]
pub(super) struct BadQuery(String);

impl fmt::Display for BadQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad query {:?}: use ?offset=N&limit=N (limit at most {MAX_LIMIT})",
            self.0
        )
    }
}

impl Page {
    /// Reads `offset` and `limit` from a query string; a limit above
    /// [`MAX_LIMIT`] is lowered to it, and other parameters are ignored.
    pub(super) fn parse(query: &str) -> Result<Page, BadQuery> {
        let mut page = Page {
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "offset" => &mut page.offset,
                "limit" => &mut page.limit,
                _ => continue,
            };
            *slot = value.parse().map_err(|_| BadQuery(query.to_owned()))?;
        }
        page.limit = page.limit.min(MAX_LIMIT);
        Ok(page)
    }
}

#[derive(Serialize)]
struct Listing<T> {
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<Vec<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<T>>,
}

#[derive(Serialize)]
struct Connection {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    address: String,
    tls: bool,
    transport: &'static str,
    /// The rooms it is in, by name, at most [`MAX_ROOMS_LISTED`].
    rooms: Vec<String>,
    rooms_total: usize,
    queued_bytes: u64,
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    age_seconds: u64,
}

#[derive(Serialize)]
struct Room {
    name: String,
    members: usize,
    messages: u64,
}

/// One page of the live connections, by id.
pub(super) fn connz(shared: &Shared, page: Page) -> String {
    let mut peers = shared.peers();
    peers.sort_unstable_by_key(|peer| peer.id());
    let total = peers.len();
    let page_peers: Vec<_> = peers.iter().skip(page.offset).take(page.limit).collect();
    let ids = page_peers.iter().map(|peer| peer.id()).collect();
    let mut rooms = shared.rooms.rooms_of(&ids, MAX_ROOMS_LISTED);
    let items = page_peers
        .into_iter()
        .map(|peer| {
            let (names, rooms_total) = rooms.remove(&peer.id()).unwrap_or_default();
            let sent = peer.outbound.output().sent();
            Connection {
                id: format!("c{}", peer.id()),
                user: peer.outbound.user().map(str::to_owned),
                address: peer.addr.to_string(),
                tls: peer.tls,
                transport: peer.transport,
                rooms: names.iter().map(|name| name.to_string()).collect(),
                rooms_total,
                queued_bytes: peer.outbound.queued_bytes() as u64,
                frames_in: peer.frames_in.load(Relaxed),
                bytes_in: peer.bytes_in.load(Relaxed),
                frames_out: sent.frames(),
                bytes_out: sent.bytes(),
                age_seconds: peer.started.elapsed().as_secs(),
            }
        })
        .collect();
    encode(&Listing {
        total,
        offset: page.offset,
        limit: page.limit,
        connections: Some(items),
        rooms: None,
    })
}

/// One page of the rooms, by name.
pub(super) fn roomz(shared: &Shared, page: Page) -> String {
    let rooms = shared.rooms.list();
    let total = rooms.len();
    let items = rooms
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|(name, members, messages)| Room {
            name: name.to_string(),
            members,
            messages,
        })
        .collect();
    encode(&Listing {
        total,
        offset: page.offset,
        limit: page.limit,
        connections: None,
        rooms: Some(items),
    })
}

fn encode<T: Serialize>(listing: &Listing<T>) -> String {
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_string_pretty(listing)
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
}
