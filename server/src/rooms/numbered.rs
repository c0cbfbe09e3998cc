//! Delivering batches whose `seq`s Redis gave (`--cluster-order room`,
//! SPEC.md 14.2): every node, the publisher's included, delivers a room's
//! messages from what Redis publishes, so all members on all nodes see
//! one order with the same numbers.
//!
//! The room's [`Order`] follows the cluster's position: a batch that
//! continues it is delivered; one already delivered (a duplicate, or one
//! published before this node's room existed) is dropped; a jump is a gap
//! notice for exactly the `seq`s this node did not get (the caller first
//! tries to fill it from the room's stream); a new epoch (Redis lost the
//! room's keys) is adopted, with a gap notice that names the previous one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Rooms, Splice};
use crate::conn::outbound::{Outbound, Stalled};
use crate::counters::Counters;

/// A batch as Redis numbered it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumberedBatch<'a> {
    pub(crate) epoch: &'a str,
    /// The `seq` of the first message.
    pub(crate) first: u64,
    pub(crate) splices: &'a [Splice],
    pub(crate) bytes: &'a [u8],
    /// The publisher's connection number, and whether it gets a copy.
    pub(crate) from: u64,
    pub(crate) echo: bool,
    pub(crate) at_ms: u64,
}

/// What delivering a numbered batch did.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Members it was queued for.
    pub(crate) queued: usize,
    /// The `seq`s a gap notice was sent for, before the batch.
    pub(crate) missed: u64,
    /// The `seq` of the batch's last message, and the epoch.
    pub(crate) last_seq: u64,
    pub(crate) epoch: Option<Arc<str>>,
    /// The publisher, if it is a member here, for its ack.
    pub(crate) publisher: Option<Arc<Outbound>>,
    /// Messages delivered (the batch's, less those seen before).
    pub(crate) delivered: u64,
}

impl Rooms {
    /// The epoch and the last `seq` delivered of `room` here, if it is.
    pub(crate) fn position(&self, room: &str) -> Option<(Arc<str>, u64)> {
        let map = self.shard(room).read();
        let entry = map.get(room)?;
        let order = entry.order.lock();
        Some((Arc::clone(order.epoch()), order.last_seq()))
    }

    /// Delivers `batch` to this node's members of `room` at the `seq`s it
    /// was given; `None` if the room is not here.
    pub(crate) fn deliver_numbered(
        &self,
        room: &str,
        batch: &NumberedBatch<'_>,
        stall: Duration,
        counters: &Counters,
        touched: &mut Vec<Arc<Outbound>>,
    ) -> Option<Delivery> {
        let mut stalled = Stalled::default();
        let mut delivery = Delivery::default();
        {
            let map = self.shard(room).read();
            let entry = map.get(room)?;
            let mut order = entry.order.lock();
            let messages = batch.splices.len() as u64;
            let mut gap = None;
            let mut skip_first = 0;
            if **order.epoch() != *batch.epoch {
                let previous = Arc::clone(order.epoch());
                order.adopt(Arc::from(batch.epoch), batch.first - 1);
                gap = Some(protocol::Gap {
                    kind: "gap".into(),
                    room: room.to_owned(),
                    epoch: batch.epoch.to_owned(),
                    from: (batch.first > 1).then_some(1),
                    to: (batch.first > 1).then_some(batch.first - 1),
                    previous_epoch: Some(previous.to_string()),
                });
                delivery.missed = batch.first - 1;
            } else if batch.first <= order.last_seq() {
                // Delivered already, in whole or in part.
                skip_first = order.last_seq() - batch.first + 1;
                if skip_first >= messages.max(1) {
                    return Some(delivery);
                }
            } else if batch.first > order.last_seq() + 1 {
                let missed = batch.first - 1 - order.last_seq();
                let (from, to) = order.skip(missed);
                gap = Some(protocol::Gap {
                    kind: "gap".into(),
                    room: room.to_owned(),
                    epoch: order.epoch().to_string(),
                    from: Some(from),
                    to: Some(to),
                    previous_epoch: None,
                });
                delivery.missed = missed;
            }
            if let Some(gap) = gap {
                entry.tell_gap(&gap, touched, &mut stalled, counters);
            }
            if batch.splices.is_empty() {
                // Only the jump to report (`room_order::catch_up`).
                return Some(delivery);
            }
            let (bytes, splices) = tail(batch, skip_first as usize);
            entry
                .messages
                .fetch_add(splices.len() as u64, Ordering::Relaxed);
            let plain_wanted = entry.plain_wanted(&splices);
            let sequenced = order.sequence(bytes, &splices, plain_wanted, batch.at_ms, None);
            for member in &entry.members {
                if member.id() == batch.from {
                    delivery.publisher = Some(Arc::clone(member));
                    if !batch.echo {
                        continue;
                    }
                }
                if member.offer(
                    sequenced.for_member(member),
                    touched,
                    &mut stalled,
                    counters,
                ) {
                    delivery.queued += 1;
                }
            }
            delivery.last_seq = sequenced.last_seq;
            delivery.epoch = Some(Arc::clone(order.epoch()));
            delivery.delivered = splices.len() as u64;
        }
        stalled.settle(stall, counters);
        Some(delivery)
    }
}

/// The batch without its first `skip` messages (its frames are messages
/// only, so a message's frame starts where the one before ended).
fn tail(batch: &NumberedBatch<'_>, skip: usize) -> (Vec<u8>, Vec<Splice>) {
    let Some(start) = batch.splices.get(skip).map(|splice| splice.frame) else {
        return (batch.bytes.to_vec(), batch.splices.to_vec());
    };
    if skip == 0 {
        return (batch.bytes.to_vec(), batch.splices.to_vec());
    }
    let splices = batch.splices[skip..]
        .iter()
        .map(|splice| Splice {
            frame: splice.frame - start,
            at: splice.at - start,
            binary: splice.binary,
        })
        .collect();
    (batch.bytes[start..].to_vec(), splices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::outbound::{Outgoing, QueueLimits};

    fn numbered(bytes: &mut Vec<u8>, splices: &mut Vec<Splice>, from: u64, to: u64) {
        for n in from..=to {
            splices.push(Splice::json_delivery(bytes, "r", n));
        }
    }

    fn seqs(rx: &crossbeam_channel::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            bytes.extend_from_slice(&batch.bytes);
        }
        let mut at = 0;
        while let Ok(Some((frame, used))) = protocol::parse_frame(&bytes[at..], 1 << 20) {
            let value: serde_json::Value = serde_json::from_slice(frame.payload).unwrap();
            out.push(if value["type"] == "gap" {
                format!("gap {}-{}", value["from"], value["to"])
            } else {
                format!("{}", value["seq"])
            });
            at += used;
        }
        out
    }

    #[test]
    fn a_room_follows_the_clusters_numbers_once_each_with_exact_gaps() {
        let rooms = Rooms::default();
        let counters = Counters::default();
        let limits = QueueLimits {
            items: 64,
            bytes: 1 << 20,
        };
        let (member, rx) = Outbound::new(7, limits);
        let mut touched = Vec::new();
        let mut stalled = Stalled::default();
        let request = super::super::JoinRequest {
            seed: Some(super::super::order::Seed {
                epoch: Arc::from("e1"),
                last_seq: 4,
                kept: Vec::new(),
            }),
            ..Default::default()
        };
        rooms
            .join(
                "r",
                &member,
                &request,
                &counters,
                &mut |_, _| 0,
                &mut touched,
                &mut stalled,
            )
            .unwrap();
        assert_eq!(rooms.position("r"), Some((Arc::from("e1"), 4)));
        let deliver = |first: u64, last: u64, epoch: &str| {
            let (mut bytes, mut splices) = (Vec::new(), Vec::new());
            numbered(&mut bytes, &mut splices, first, last);
            let batch = NumberedBatch {
                epoch,
                first,
                splices: &splices,
                bytes: &bytes,
                from: 99,
                echo: false,
                at_ms: 0,
            };
            let mut touched = Vec::new();
            rooms
                .deliver_numbered("r", &batch, Duration::ZERO, &counters, &mut touched)
                .unwrap()
        };
        // Published before the room was here: seen already.
        assert_eq!(deliver(3, 4, "e1").delivered, 0);
        assert_eq!(deliver(5, 6, "e1").delivered, 2);
        // Overlapping: only the new message.
        assert_eq!(deliver(6, 7, "e1").delivered, 1);
        let jumped = deliver(10, 10, "e1");
        assert_eq!((jumped.missed, jumped.delivered), (2, 1));
        let restarted = deliver(1, 1, "e2");
        assert_eq!(restarted.epoch.as_deref(), Some("e2"));
        assert_eq!(
            seqs(&rx),
            ["5", "6", "7", "gap 8-9", "10", "gap null-null", "1"]
        );
    }
}
