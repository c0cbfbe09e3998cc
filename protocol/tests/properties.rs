//! Property tests of the codec: whatever the frames and however the stream is
//! cut, the decoder gives back exactly what was encoded; malformed input gets
//! its typed error and never a panic; the decoder's memory stays bounded.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use protocol::{
    BinaryDelivery, BinaryPublish, Content, DEFAULT_MAX_FRAME, DecodeError, Decoder, Delivery,
    ErrorCode, ErrorPayload, Flags, Frame, Hello, HelloReply, MemberChange, MemberEvent,
    MessageType, Request, RoomReply, ServerMessage, Stats, parse_frame, validate_room,
};
use serde_json::value::RawValue;
use testkit::{round_trip_frame, round_trip_json};

/// A decoded frame, owned.
type Decoded = (MessageType, Flags, Vec<u8>);

/// The most the decoder may hold beyond one maximum frame: one read.
const ONE_READ: usize = protocol::decoder::MAX_READ;

/// The decoder's memory bound for a maximum `length` of `max`: one whole
/// frame on the wire (4 + max bytes) plus one read.
fn capacity_bound(max: u32) -> usize {
    4 + max as usize + ONE_READ
}

/// Cheap deterministic bytes, so large payloads don't cost a strategy call
/// per byte.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn kinds() -> impl Strategy<Value = MessageType> {
    prop::sample::select(MessageType::ALL.to_vec())
}

fn flags() -> impl Strategy<Value = Flags> {
    prop::sample::select(vec![Flags::NONE, Flags::JSON, Flags::BINARY])
}

/// A payload length up to `max_payload`: often empty or small, sometimes
/// medium, rarely as large as allowed.
fn payload_len(max_payload: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0),
        10 => 0..=64usize.min(max_payload),
        4 => 0..=4096usize.min(max_payload),
        1 => 0..=max_payload,
        1 => Just(max_payload),
    ]
}

fn frames_for(max: u32) -> impl Strategy<Value = Vec<Decoded>> {
    let max_payload = max as usize - 3;
    let frame = (kinds(), flags(), payload_len(max_payload), any::<u64>())
        .prop_map(|(kind, flags, len, seed)| (kind, flags, pseudo_random_bytes(len, seed)));
    prop::collection::vec(frame, 0..12)
}

fn max_lengths() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(3u32),
        Just(16),
        Just(300),
        Just(70_000),
        Just(DEFAULT_MAX_FRAME)
    ]
}

/// Frames that fit under a maximum, with that maximum.
fn frames_with_max() -> impl Strategy<Value = (u32, Vec<Decoded>)> {
    max_lengths().prop_flat_map(|max| (Just(max), frames_for(max)))
}

fn encode_all(frames: &[Decoded]) -> Vec<u8> {
    let mut stream = Vec::new();
    for (kind, flags, payload) in frames {
        protocol::encode(&mut stream, *kind, *flags, payload).expect("frames fit");
    }
    stream
}

/// How to cut a stream: every byte on its own, or at chosen points.
#[derive(Debug, Clone)]
enum Cuts {
    OneByte,
    At(Vec<Index>),
}

fn cuts() -> impl Strategy<Value = Cuts> {
    prop_oneof![
        1 => Just(Cuts::OneByte),
        4 => prop::collection::vec(any::<Index>(), 0..40).prop_map(Cuts::At),
    ]
}

/// The pieces the stream arrives in. One-byte pieces are used for streams of
/// up to 64 KiB (beyond that they only make the test slow); longer streams
/// are cut at the chosen points and after every 64 KiB.
fn pieces<'a>(stream: &'a [u8], cuts: &Cuts) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = match cuts {
        Cuts::OneByte if stream.len() <= ONE_READ => (0..=stream.len()).collect(),
        Cuts::OneByte => Vec::new(),
        Cuts::At(indices) => indices
            .iter()
            .map(|index| index.index(stream.len() + 1))
            .collect(),
    };
    points.extend((0..=stream.len()).step_by(ONE_READ));
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|pair| &stream[pair[0]..pair[1]])
        .collect()
}

/// What a stream decodes to, computed from SPEC.md section 1.4 directly,
/// independently of the crate.
#[derive(Debug, PartialEq)]
enum Ending {
    /// Every byte belongs to a complete frame.
    Clean,
    /// The stream ends inside a frame that is valid so far.
    Partial,
    Error(DecodeError),
}

fn model(stream: &[u8], max: u32) -> (Vec<Decoded>, Ending) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, Ending::Clean);
        }
        let Some(prefix) = rest.first_chunk::<4>() else {
            return (frames, Ending::Partial);
        };
        let length = u32::from_be_bytes(*prefix);
        if length < 3 {
            return (frames, Ending::Error(DecodeError::TooShort { length }));
        }
        if length > max {
            return (frames, Ending::Error(DecodeError::TooLarge { length, max }));
        }
        if let Some(&version) = rest.get(4)
            && version != 1
        {
            return (
                frames,
                Ending::Error(DecodeError::UnsupportedVersion { version }),
            );
        }
        if let Some(&kind) = rest.get(5)
            && !(1..=7).contains(&kind)
        {
            return (frames, Ending::Error(DecodeError::UnknownType { kind }));
        }
        if let Some(&flags) = rest.get(6)
            && (flags & 0xfc != 0 || flags == 0x03)
        {
            return (frames, Ending::Error(DecodeError::BadFlags { flags }));
        }
        let total = 4 + length as usize;
        if rest.len() < total {
            return (frames, Ending::Partial);
        }
        let kind = MessageType::from_u8(rest[5]).expect("checked");
        let flags = Flags::from_bits(rest[6]).expect("checked");
        frames.push((kind, flags, rest[7..total].to_vec()));
        rest = &rest[total..];
    }
}

/// Takes every complete frame out of the decoder.
fn drain(decoder: &mut Decoder, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
    while let Some(frame) = decoder.next_frame()? {
        out.push((frame.kind, frame.flags, frame.payload.to_vec()));
    }
    Ok(())
}

/// What a decoder made of a stream.
#[derive(Debug)]
struct Outcome {
    frames: Vec<Decoded>,
    error: Option<DecodeError>,
    buffered: usize,
    peak_capacity: usize,
}

impl Outcome {
    fn ending(&self) -> Ending {
        match self.error {
            Some(error) => Ending::Error(error),
            None if self.buffered == 0 => Ending::Clean,
            None => Ending::Partial,
        }
    }
}

/// Decodes the pieces with [`Decoder::feed`].
fn decode_by_feed(pieces: &[&[u8]], max: u32) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    let mut peak_capacity = 0;
    for piece in pieces {
        decoder.feed(piece);
        peak_capacity = peak_capacity.max(decoder.capacity());
        if let Err(error) = drain(&mut decoder, &mut frames) {
            return Outcome {
                frames,
                error: Some(error),
                buffered: decoder.buffered(),
                peak_capacity,
            };
        }
    }
    Outcome {
        frames,
        error: None,
        buffered: decoder.buffered(),
        peak_capacity,
    }
}

/// Decodes the pieces the way a socket reader does: each piece is what the
/// socket has ready, read with [`Decoder::read_buf`] and [`Decoder::commit`]
/// (possibly in several reads, if the offered buffer is smaller), and frames
/// are taken out after every read.
fn decode_by_read_buf(pieces: &[&[u8]], max: u32) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    let mut peak_capacity = 0;
    for piece in pieces {
        let mut ready = *piece;
        while !ready.is_empty() {
            let space = decoder.read_buf();
            assert!(!space.is_empty(), "read_buf offered no space");
            let n = space.len().min(ready.len());
            space[..n].copy_from_slice(&ready[..n]);
            decoder.commit(n);
            ready = &ready[n..];
            peak_capacity = peak_capacity.max(decoder.capacity());
            if let Err(error) = drain(&mut decoder, &mut frames) {
                return Outcome {
                    frames,
                    error: Some(error),
                    buffered: decoder.buffered(),
                    peak_capacity,
                };
            }
        }
    }
    Outcome {
        frames,
        error: None,
        buffered: decoder.buffered(),
        peak_capacity,
    }
}

/// Checks both decoding paths against the model, and the memory bound.
fn check_stream(stream: &[u8], cuts: &Cuts, max: u32) -> Result<(), TestCaseError> {
    let (expected_frames, expected_ending) = model(stream, max);
    let pieces = pieces(stream, cuts);
    for (path, outcome) in [
        ("feed", decode_by_feed(&pieces, max)),
        ("read_buf", decode_by_read_buf(&pieces, max)),
    ] {
        prop_assert_eq!(outcome.frames.len(), expected_frames.len(), "{} path", path);
        prop_assert!(
            outcome.frames == expected_frames,
            "{} path: frames differ",
            path
        );
        prop_assert_eq!(&outcome.ending(), &expected_ending, "{} path", path);
        prop_assert!(
            outcome.peak_capacity <= capacity_bound(max),
            "{} path: capacity {} above one frame plus one read ({})",
            path,
            outcome.peak_capacity,
            capacity_bound(max)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of valid frames, concatenated and cut anywhere, decodes
    /// to exactly those frames on both paths.
    #[test]
    fn frames_survive_any_cutting((max, frames) in frames_with_max(), cuts in cuts()) {
        let stream = encode_all(&frames);
        let (model_frames, ending) = model(&stream, max);
        prop_assert!(model_frames == frames, "the model disagrees with the encoder");
        prop_assert_eq!(ending, Ending::Clean);
        check_stream(&stream, &cuts, max)?;
    }

    /// Valid frames followed by a malformed header: the frames come out, then
    /// the typed error for the corruption, however the bytes are cut.
    #[test]
    fn malformed_headers_get_their_typed_error(
        (max, frames) in frames_with_max(),
        corruption in corruptions(),
        cuts in cuts(),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut stream = encode_all(&frames);
        let (header, expected) = corruption.header(max);
        stream.extend_from_slice(&header);
        stream.extend_from_slice(&trailing);
        let (model_frames, ending) = model(&stream, max);
        prop_assert!(model_frames == frames);
        prop_assert_eq!(ending, Ending::Error(expected));
        prop_assert_eq!(expected.code(), corruption.code());
        check_stream(&stream, &cuts, max)?;
    }

    /// Arbitrary bytes never panic the decoder, and it agrees with the model.
    #[test]
    fn arbitrary_bytes_never_panic(
        max in max_lengths(),
        garbage in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in cuts(),
    ) {
        check_stream(&garbage, &cuts, max)?;
        // Whatever frames come out, reading them as requests never panics.
        for (kind, flags, payload) in model(&garbage, max).0 {
            let _ = Request::parse(&Frame::new(kind, flags, &payload));
        }
    }

    /// Arbitrary bytes behind a valid header: the decoder and the request
    /// parser never panic, and the frame decodes whole.
    #[test]
    fn arbitrary_payloads_never_panic_the_request_parser(
        kind in kinds(),
        flags in flags(),
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let frame = Frame::new(kind, flags, &payload);
        let bytes = frame.to_vec().expect("small");
        let (decoded, used) = parse_frame(&bytes, DEFAULT_MAX_FRAME)
            .expect("valid header")
            .expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, frame);
        if let Err(error) = Request::parse(&decoded) {
            prop_assert!(matches!(
                error.code,
                ErrorCode::ParseError | ErrorCode::InvalidPayload | ErrorCode::InvalidRoom
            ));
        }
    }

    /// Arbitrary JSON text where a JSON object is required: either it is an
    /// object, or it is refused as not-JSON or as the wrong shape.
    #[test]
    fn non_objects_are_refused(
        kind in prop::sample::select(vec![
            MessageType::Hello,
            MessageType::JoinRoom,
            MessageType::LeaveRoom,
            MessageType::Message,
        ]),
        value in json_values(),
    ) {
        let text = value.to_string();
        let result = Request::parse(&Frame::json(kind, text.as_bytes()));
        if !value.is_object() {
            prop_assert_eq!(
                result.map(|_| ()).map_err(|e| e.code),
                Err(ErrorCode::InvalidPayload),
                "{} accepted {}", kind, text
            );
        }
    }

    /// The decoder never reserves memory for a declared length: a header
    /// announcing up to the maximum, followed by a trickle, costs at most
    /// twice the bytes that arrived, or one read.
    #[test]
    fn declared_lengths_cost_nothing_up_front(
        length in 3u32..=DEFAULT_MAX_FRAME,
        arrived in 0usize..4096,
    ) {
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 4, 2]);
        let body = (length as usize - 3).min(arrived);
        bytes.extend(std::iter::repeat_n(0xAA, body));
        decoder.feed(&bytes);
        let complete = body == length as usize - 3;
        prop_assert_eq!(decoder.next_frame().map(|f| f.is_some()), Ok(complete));
        // What the next socket read is offered, and the memory that takes,
        // grow with what arrived, not with what was declared.
        let received = bytes.len();
        let offered = decoder.read_buf().len();
        prop_assert!(offered <= received.max(ONE_READ), "offered {}", offered);
        prop_assert!(
            decoder.capacity() <= received + received.max(ONE_READ),
            "capacity {} after {} bytes", decoder.capacity(), received
        );
    }

    /// Encode/decode round trip of every message type with every flag.
    #[test]
    fn every_frame_round_trips(
        kind in kinds(),
        flags in flags(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let frame = Frame::new(kind, flags, &payload);
        let mut bytes = vec![0xEE; 3]; // encode appends; what was there stays
        frame.encode(&mut bytes).expect("small");
        prop_assert_eq!(&bytes[..3], &[0xEE; 3]);
        let bytes = &bytes[3..];
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        prop_assert_eq!(&bytes[..4], &(3 + payload.len() as u32).to_be_bytes());
        prop_assert_eq!(&bytes[4..7], &[1, kind as u8, flags.bits()]);
        let (decoded, used) = parse_frame(bytes, frame.length_field() as u32)
            .expect("valid")
            .expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, frame);
    }

    /// Client HELLO: what a client encodes, the server reads back.
    #[test]
    fn hello_round_trips(
        user_id in prop::option::of("\\PC{0,32}"),
        client_version in prop::option::of("\\PC{0,16}"),
        echo in any::<bool>(),
    ) {
        let hello = Hello { user_id, client_version, echo, ..Hello::default() };
        let payload = serde_json::to_vec(&hello).expect("serializes");
        let frame = round_trip_frame(MessageType::Hello, Flags::JSON, &payload);
        match Request::parse(&frame.as_frame()) {
            Ok(Request::Hello(parsed)) => prop_assert_eq!(parsed, hello),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// JOIN_ROOM and LEAVE_ROOM: any valid room name, padded with white
    /// space, comes back trimmed.
    #[test]
    fn room_requests_round_trip(
        room in valid_rooms(),
        pad_left in "[ \t\u{a0}\u{3000}]{0,3}",
        pad_right in "[ \t\n\u{2003}]{0,3}",
        leave in any::<bool>(),
    ) {
        let kind = if leave { MessageType::LeaveRoom } else { MessageType::JoinRoom };
        let payload = serde_json::to_vec(&serde_json::json!({
            "room": format!("{pad_left}{room}{pad_right}")
        })).expect("serializes");
        let frame = round_trip_frame(kind, Flags::JSON, &payload);
        match (leave, Request::parse(&frame.as_frame())) {
            (false, Ok(Request::Join { room: parsed, .. })) | (true, Ok(Request::Leave { room: parsed, .. })) => {
                prop_assert_eq!(parsed, room.as_str());
            }
            (_, other) => prop_assert!(false, "{:?}", other),
        }
    }

    /// MESSAGE with JSON content: the content text comes through unchanged.
    #[test]
    fn json_messages_round_trip(room in valid_rooms(), content in json_values()) {
        let content_text = content.to_string();
        let payload = format!(
            "{{\"room\":{},\"content\":{}}}",
            serde_json::to_string(&room).expect("serializes"),
            content_text
        );
        let frame = round_trip_frame(MessageType::Message, Flags::JSON, payload.as_bytes());
        match Request::parse(&frame.as_frame()) {
            Ok(Request::Publish { room: parsed, content: Content::Json(raw), .. }) => {
                prop_assert_eq!(parsed, room.as_str());
                prop_assert_eq!(raw.get(), content_text.as_str());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// MESSAGE with BINARY content, and its delivery layout: bodies come
    /// through byte-exact.
    #[test]
    fn binary_messages_round_trip(
        room in valid_rooms(),
        from in "c[0-9]{1,10}",
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut payload = Vec::new();
        BinaryPublish { room: &room, body: &body }.encode(&mut payload).expect("short room");
        let frame = round_trip_frame(MessageType::Message, Flags::BINARY, &payload);
        match Request::parse(&frame.as_frame()) {
            Ok(Request::Publish { room: parsed, content: Content::Binary(bytes), .. }) => {
                prop_assert_eq!(parsed, room.as_str());
                prop_assert_eq!(bytes, &body[..]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let mut delivered = Vec::new();
        BinaryDelivery { room: &room, from: &from, body: &body }
            .encode(&mut delivered)
            .expect("short names");
        let frame = round_trip_frame(MessageType::Message, Flags::BINARY, &delivered);
        let parsed = BinaryDelivery::parse(&frame.payload).expect("parses");
        prop_assert_eq!(parsed, BinaryDelivery { room: &room, from: &from, body: &body });
    }

    /// HEARTBEAT: the request carries the exact flags and payload to echo.
    #[test]
    fn heartbeats_round_trip(
        flags in prop::sample::select(vec![Flags::NONE, Flags::BINARY]),
        payload in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let frame = round_trip_frame(MessageType::Heartbeat, flags, &payload);
        match Request::parse(&frame.as_frame()) {
            Ok(Request::Heartbeat { flags: echoed, payload: bytes }) => {
                prop_assert_eq!(echoed, flags);
                prop_assert_eq!(bytes, &payload[..]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Server payloads: HELLO answer, room answers, deliveries, membership
    /// events and errors survive serialize → frame → decode → deserialize.
    #[test]
    fn server_payloads_round_trip(
        id in 0u64..1_000_000,
        counters in prop::array::uniform8(any::<u64>()),
        errors in prop::collection::btree_map(
            prop::sample::select(ErrorCode::ALL.to_vec()), any::<u64>(), 0..4),
        room in valid_rooms(),
        user in prop::option::of("\\PC{0,20}"),
        content in json_values(),
        timestamp in any::<u64>(),
        code in prop::sample::select(ErrorCode::ALL.to_vec()),
        message in "\\PC{0,60}",
    ) {
        let connection_id = format!("c{id}");

        let reply = HelloReply {
            status: "connected".into(),
            connection_id: connection_id.clone(),
            server_version: "0.1.0".into(),
            max_frame_size: DEFAULT_MAX_FRAME,
            idle_timeout_ms: counters[0],
            stats: Some(Stats {
                connections: counters[1],
                connections_total: counters[2],
                rooms: counters[3],
                frames_in: counters[4],
                frames_out: counters[5],
                bytes_in: counters[6],
                bytes_out: counters[7],
                slow_consumers: counters[0] / 2,
                errors: errors
                    .iter()
                    .map(|(code, n)| (code.as_str().to_owned(), *n))
                    .collect::<BTreeMap<_, _>>(),
                memberships: counters[3] / 2,
                memory_used: counters[4] / 3,
                memory_budget: counters[5],
            }),
            id: None,
        };
        let frame = round_trip_json(MessageType::Hello, &reply);
        prop_assert_eq!(
            serde_json::from_slice::<HelloReply>(&frame.payload).expect("parses"),
            reply
        );

        for (kind, status) in [(MessageType::JoinRoom, "joined"), (MessageType::LeaveRoom, "left")] {
            let answer = RoomReply {
                status: status.into(),
                room: room.clone(),
                members: id,
                id: None,
                epoch: None,
                seq: None,
                member_list: None,
            };
            let frame = round_trip_json(kind, &answer);
            prop_assert_eq!(
                serde_json::from_slice::<RoomReply>(&frame.payload).expect("parses"),
                answer
            );
        }

        let content_text = content.to_string();
        let raw = RawValue::from_string(content_text.clone()).expect("valid JSON");
        let delivery = Delivery {
            room: Cow::Borrowed(&room),
            from: Cow::Borrowed(&connection_id),
            user: user.as_deref().map(Cow::Borrowed),
            content: &raw,
            timestamp,
            seq: Some(timestamp / 3),
            epoch: Some(Cow::Borrowed("0123456789abcdef")),
        };
        let frame = round_trip_json(MessageType::Message, &delivery);
        match ServerMessage::parse(&frame.payload) {
            Ok(ServerMessage::Delivery(parsed)) => {
                prop_assert_eq!(&parsed.room, &room);
                prop_assert_eq!(&parsed.from, &connection_id);
                prop_assert_eq!(parsed.user.as_deref(), user.as_deref());
                prop_assert_eq!(parsed.content.get(), content_text.as_str());
                prop_assert_eq!(parsed.timestamp, timestamp);
            }
            other => prop_assert!(false, "{:?}", other),
        }

        for change in [MemberChange::Joined, MemberChange::Left] {
            let event = MemberEvent {
                change,
                room: room.clone(),
                connection_id: connection_id.clone(),
                user: user.clone(),
                timestamp,
            };
            let frame = round_trip_json(MessageType::Message, &event);
            match ServerMessage::parse(&frame.payload) {
                Ok(ServerMessage::Member(parsed)) => prop_assert_eq!(parsed, event),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        let error = ErrorPayload::new(code, message);
        let frame = round_trip_json(MessageType::Error, &error);
        let parsed: ErrorPayload = serde_json::from_slice(&frame.payload).expect("parses");
        prop_assert_eq!(parsed.fatal, code.is_fatal());
        prop_assert_eq!(parsed, error);
    }
}

/// Valid room names: printable text of 1 to 64 bytes, not starting or ending
/// with white space.
fn valid_rooms() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:#-]([a-zA-Z0-9 _.:#é☕日本-]{0,14}[a-zA-Z0-9é☕])?"
        .prop_filter("a valid room", |room| {
            validate_room(room) == Ok(room.as_str())
        })
}

/// Arbitrary JSON values, nested a little.
fn json_values() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A malformed frame header of each kind SPEC.md section 1.4 lists.
#[derive(Debug, Clone)]
enum Corruption {
    /// `length` below 3.
    TooShort(u32),
    /// `length` above the maximum by this much (at least 1).
    TooLarge(u32),
    BadVersion(u8),
    UnknownType(u8),
    ReservedFlags(u8),
    BothFlags,
}

fn corruptions() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (0u32..3).prop_map(Corruption::TooShort),
        prop_oneof![Just(1u32), 1u32..=u32::MAX / 2].prop_map(Corruption::TooLarge),
        any::<u8>()
            .prop_filter("not 1", |v| *v != 1)
            .prop_map(Corruption::BadVersion),
        prop_oneof![Just(0u8), 8u8..=255].prop_map(Corruption::UnknownType),
        (1u8..=63).prop_map(|high| Corruption::ReservedFlags((high << 2) | (high & 3))),
        Just(Corruption::BothFlags),
    ]
}

impl Corruption {
    /// The shortest bytes showing the corruption, and the error they must get.
    fn header(&self, max: u32) -> (Vec<u8>, DecodeError) {
        let length = 10u32.min(max);
        let frame = |version: u8, kind: u8, flags: u8| {
            let mut bytes = length.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[version, kind, flags]);
            bytes
        };
        match *self {
            Corruption::TooShort(length) => (
                length.to_be_bytes().to_vec(),
                DecodeError::TooShort { length },
            ),
            Corruption::TooLarge(over) => {
                let length = max.saturating_add(over);
                (
                    length.to_be_bytes().to_vec(),
                    DecodeError::TooLarge { length, max },
                )
            }
            Corruption::BadVersion(version) => (
                frame(version, 4, 1),
                DecodeError::UnsupportedVersion { version },
            ),
            Corruption::UnknownType(kind) => (frame(1, kind, 1), DecodeError::UnknownType { kind }),
            Corruption::ReservedFlags(flags) => {
                (frame(1, 4, flags), DecodeError::BadFlags { flags })
            }
            Corruption::BothFlags => (frame(1, 4, 3), DecodeError::BadFlags { flags: 3 }),
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            Corruption::TooShort(_)
            | Corruption::TooLarge(_)
            | Corruption::ReservedFlags(_)
            | Corruption::BothFlags => ErrorCode::InvalidFrame,
            Corruption::BadVersion(_) => ErrorCode::UnsupportedVersion,
            Corruption::UnknownType(_) => ErrorCode::UnknownMessageType,
        }
    }
}

/// The decoder holds at most one maximum frame plus one read, checked with
/// the worst case for its buffer growth: a nearly complete maximum frame,
/// then a large read that completes it and starts the next one.
#[test]
fn buffer_bound_holds_when_a_read_completes_a_maximum_frame() {
    for max in [300u32, 70_000, DEFAULT_MAX_FRAME] {
        let big = Frame::new(
            MessageType::Message,
            Flags::BINARY,
            &vec![1; max as usize - 3],
        )
        .to_vec()
        .expect("fits");
        let small = Frame::new(MessageType::Heartbeat, Flags::NONE, &[2; 100])
            .to_vec()
            .expect("fits");
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend_from_slice(&big);
            for _ in 0..1000 {
                stream.extend_from_slice(&small);
            }
        }
        // Reads of every size, up to one read (64 KiB), starting 10 bytes
        // before the end of a maximum frame.
        for first in [1usize, 10, 100, 4096, ONE_READ] {
            for read in [1usize, 7, 4096, 65_000, ONE_READ] {
                let mut points = vec![0, big.len() - 10, big.len() - 10 + first];
                let mut at = *points.last().expect("non-empty");
                while at < stream.len() {
                    at = (at + read).min(stream.len());
                    points.push(at);
                }
                points.retain(|p| *p <= stream.len());
                points.dedup();
                let pieces: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
                for (path, outcome) in [
                    ("feed", decode_by_feed(&pieces, max)),
                    ("read_buf", decode_by_read_buf(&pieces, max)),
                ] {
                    assert_eq!(outcome.frames.len(), 3003, "{path}");
                    assert!(
                        outcome.peak_capacity <= capacity_bound(max),
                        "{path} path, max {max}, first read {first}, reads {read}: capacity {} above {}",
                        outcome.peak_capacity,
                        capacity_bound(max)
                    );
                }
            }
        }
    }
}
