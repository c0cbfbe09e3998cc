//! SPEC.md's hex examples are test vectors: this test reads them from the
//! document itself and checks every one against the code, so the contract and
//! the implementation cannot drift apart. The vector format is described in
//! SPEC.md, section 9.1.
//!
//! It also checks SPEC.md's message-type and error-code tables against
//! [`MessageType`] and [`ErrorCode`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use protocol::{
    BinaryDelivery, Content, DEFAULT_MAX_FRAME, DecodeError, Decoder, ErrorCode, ErrorPayload,
    Flags, Frame, HelloReply, MessageType, Recipient, Recovery, Request, RoomReply,
    SequencedBinaryDelivery, ServerMessage, WhoReply, parse_frame, validate_room,
};

/// Fewer vectors than this means the extraction is broken (or the document
/// lost its examples); the test must never pass vacuously.
const MIN_VECTORS: usize = 50;

fn spec_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

/// One ```hex block of SPEC.md.
#[derive(Debug)]
struct Vector {
    /// 1-based line of the opening fence, for messages.
    line: usize,
    /// The first comment line, for messages.
    title: String,
    /// `key: value` lines, in order.
    keys: Vec<(String, String)>,
    bytes: Vec<u8>,
}

const KEYS: [&str; 8] = [
    "frame",
    "payload",
    "payload-hex",
    "max",
    "request",
    "refused",
    "server",
    "decode-error",
];

impl Vector {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.keys.iter().filter(|(k, _)| k == key);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(
            values.next().is_none(),
            "{self}: the key `{key}` is given twice"
        );
        value
    }

    fn max(&self) -> u32 {
        self.get("max").map_or(DEFAULT_MAX_FRAME, |max| {
            max.parse()
                .unwrap_or_else(|_| panic!("{self}: `max: {max}` is not a number"))
        })
    }
}

impl std::fmt::Display for Vector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SPEC.md line {} ({})", self.line, self.title)
    }
}

fn parse_hex(text: &str, context: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| {
            assert_eq!(
                pair.len(),
                2,
                "{context}: `{pair}` is not a two-digit hex byte"
            );
            u8::from_str_radix(pair, 16)
                .unwrap_or_else(|_| panic!("{context}: `{pair}` is not a hex byte"))
        })
        .collect()
}

fn extract_vectors(spec: &str) -> Vec<Vector> {
    let mut vectors = Vec::new();
    let mut current: Option<Vector> = None;
    for (index, raw) in spec.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let Some(vector) = current.as_mut() else {
            if line.trim() == "```hex" {
                current = Some(Vector {
                    line: index + 1,
                    title: String::new(),
                    keys: Vec::new(),
                    bytes: Vec::new(),
                });
            }
            continue;
        };
        if line.trim() == "```" {
            let vector = current.take().expect("inside a block");
            assert!(
                !vector.bytes.is_empty(),
                "{vector}: the vector has no bytes"
            );
            vectors.push(vector);
        } else if let Some(comment) = line.strip_prefix('#') {
            if vector.title.is_empty() {
                vector.title = comment.trim().to_owned();
            }
        } else if let Some((key, value)) = line.split_once(':') {
            assert!(
                KEYS.contains(&key),
                "SPEC.md line {}: unknown vector key `{key}`",
                index + 1
            );
            let value = value.strip_prefix(' ').unwrap_or(value);
            vector.keys.push((key.to_owned(), value.to_owned()));
        } else {
            let context = format!("SPEC.md line {}", index + 1);
            vector.bytes.extend(parse_hex(line, &context));
        }
    }
    assert!(current.is_none(), "SPEC.md ends inside a ```hex block");
    vectors
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for byte in bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        write!(out, "{byte:02x}").expect("writing to a String");
    }
    out
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// ` id=ID` for a request or refusal that carries an id, as SPEC.md 9.1
/// writes it.
fn id_suffix(id: &Option<protocol::RequestId>) -> String {
    id.as_ref()
        .map(|id| format!(" id={}", serde_json::to_string(id).expect("ids serialize")))
        .unwrap_or_default()
}

/// A refusal as SPEC.md section 9.1 writes it: the code, then what the
/// ERROR would echo.
fn render_refusal(error: &protocol::RequestError) -> String {
    let room = error
        .room
        .as_deref()
        .map(|room| format!(" room={}", json_string(room)))
        .unwrap_or_default();
    format!("{}{}{room}", error.code, id_suffix(&error.id))
}

/// A request as SPEC.md section 9.1 writes it.
fn render(request: &Request<'_>) -> String {
    let text = match request {
        Request::Hello(hello) => format!(
            "HELLO {}",
            serde_json::to_string(hello).expect("HELLO serializes")
        ),
        Request::Join { room, id, recovery } => {
            let recovery = match recovery {
                None => String::new(),
                Some(Recovery::Since(since)) => format!(" since={}:{}", since.epoch, since.seq),
                Some(Recovery::Last(n)) => format!(" history={n}"),
            };
            format!("JOIN {}{}{recovery}", json_string(room), id_suffix(id))
        }
        Request::Who { room, id } => format!("WHO {}{}", json_string(room), id_suffix(id)),
        Request::Direct { to, content, id } => {
            let to = match to {
                Recipient::User(user) => format!("user={}", json_string(user)),
                Recipient::Connection(id) => format!("connection={}", json_string(id)),
            };
            format!("DIRECT {to} JSON {}{}", content.get(), id_suffix(id))
        }
        Request::Leave { room, id } => format!("LEAVE {}{}", json_string(room), id_suffix(id)),
        Request::Publish {
            room,
            content: Content::Json(raw),
            id,
            ack,
        } => format!(
            "PUBLISH {} JSON {}{}{}",
            json_string(room),
            raw.get(),
            id_suffix(id),
            if *ack { " ack" } else { "" }
        ),
        Request::Publish {
            room,
            content: Content::Binary(body),
            ..
        } => format!("PUBLISH {} BINARY {}", json_string(room), hex(body)),
        Request::Heartbeat { flags, payload } if flags.is_json() => {
            format!("HEARTBEAT JSON {}", String::from_utf8_lossy(payload))
        }
        Request::Heartbeat { flags, payload } => format!("HEARTBEAT {flags:?} {}", hex(payload)),
        Request::ClientError => "CLIENT_ERROR".to_owned(),
    };
    text.trim_end().to_owned()
}

fn kind_named(name: &str) -> Option<MessageType> {
    MessageType::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
}

fn flags_named(name: &str) -> Option<Flags> {
    [Flags::NONE, Flags::JSON, Flags::BINARY]
        .into_iter()
        .find(|flags| format!("{flags:?}") == name)
}

fn code_named(vector: &Vector, name: &str) -> ErrorCode {
    let code = ErrorCode::from_wire(name);
    assert_ne!(
        code,
        ErrorCode::Unknown,
        "{vector}: `{name}` is not an error code"
    );
    code
}

/// A decoded frame, owned.
type Decoded = (MessageType, Flags, Vec<u8>);

/// Feeds `bytes` to a decoder one byte at a time: the frames it yields, and
/// the index of the byte after which it failed, with the error.
fn decode_bytewise(bytes: &[u8], max: u32) -> (Vec<Decoded>, Option<(usize, DecodeError)>) {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    for (index, byte) in bytes.iter().enumerate() {
        decoder.feed(std::slice::from_ref(byte));
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push((frame.kind, frame.flags, frame.payload.to_vec())),
                Ok(None) => break,
                Err(error) => return (frames, Some((index, error))),
            }
        }
    }
    (frames, None)
}

/// What a vector exercised, for the coverage checks at the end.
#[derive(Default)]
struct Seen {
    kinds: BTreeSet<&'static str>,
    requests: BTreeSet<String>,
    refused: BTreeSet<&'static str>,
    server: BTreeSet<String>,
    decode_errors: BTreeSet<String>,
}

fn check_valid(vector: &Vector, seen: &mut Seen) {
    let frame_line = vector.get("frame").expect("valid vectors have frame:");
    let (kind_name, flags_name) = frame_line
        .split_once(' ')
        .unwrap_or_else(|| panic!("{vector}: write `frame: TYPE FLAGS`"));
    let kind =
        kind_named(kind_name).unwrap_or_else(|| panic!("{vector}: unknown type `{kind_name}`"));
    let flags =
        flags_named(flags_name).unwrap_or_else(|| panic!("{vector}: unknown flags `{flags_name}`"));
    let payload: Vec<u8> = match (vector.get("payload"), vector.get("payload-hex")) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some("empty")) => Vec::new(),
        (None, Some(bytes)) => parse_hex(bytes, &vector.to_string()),
        _ => panic!("{vector}: give exactly one of payload: and payload-hex:"),
    };
    assert!(
        vector.get("decode-error").is_none(),
        "{vector}: a valid vector has no decode-error:"
    );
    let max = vector.max();

    // The bytes decode to the stated frame, using all of them.
    let (frame, used) = parse_frame(&vector.bytes, max)
        .unwrap_or_else(|error| panic!("{vector}: does not decode: {error}"))
        .unwrap_or_else(|| panic!("{vector}: the bytes are an incomplete frame"));
    assert_eq!(used, vector.bytes.len(), "{vector}: trailing bytes");
    assert_eq!(frame.kind, kind, "{vector}: type");
    assert_eq!(frame.flags, flags, "{vector}: flags");
    assert_eq!(
        frame.payload,
        &payload[..],
        "{vector}: payload is {:?}",
        String::from_utf8_lossy(frame.payload)
    );

    // Encoding the stated frame gives the bytes exactly.
    let encoded = Frame::new(kind, flags, &payload)
        .to_vec()
        .expect("vectors are small");
    assert_eq!(hex(&encoded), hex(&vector.bytes), "{vector}: re-encoding");

    // The incremental decoder agrees when fed one byte at a time.
    let (frames, error) = decode_bytewise(&vector.bytes, max);
    assert_eq!(error, None, "{vector}: the decoder refused it");
    assert_eq!(
        frames,
        [(kind, flags, payload.clone())],
        "{vector}: decoder"
    );

    // The limit is exact: the same frame under a maximum one below its length is refused.
    let length = u32::try_from(frame.length_field()).expect("vectors are small");
    assert_eq!(
        parse_frame(&vector.bytes, length - 1).map(|_| ()),
        Err(DecodeError::TooLarge {
            length,
            max: length - 1
        }),
        "{vector}: a maximum below the length must refuse it"
    );

    seen.kinds.insert(kind.name());
    let request = vector.get("request");
    let refused = vector.get("refused");
    let server = vector.get("server");
    match (request, refused, server) {
        (Some(expected), None, None) => {
            let parsed = Request::parse(&frame)
                .unwrap_or_else(|error| panic!("{vector}: the request is refused: {error}"));
            assert_eq!(render(&parsed), expected, "{vector}: request");
            let word = expected.split(' ').next().unwrap_or_default();
            let detail = match &parsed {
                Request::Publish { ack: true, .. } => " JSON ack",
                Request::Publish { content, .. } => match content {
                    Content::Json(_) => " JSON",
                    Content::Binary(_) => " BINARY",
                },
                Request::Join {
                    recovery: Some(Recovery::Since(_)),
                    ..
                } => " since",
                Request::Join {
                    recovery: Some(Recovery::Last(_)),
                    ..
                } => " history",
                Request::Direct {
                    to: Recipient::User(_),
                    ..
                } => " user",
                Request::Direct {
                    to: Recipient::Connection(_),
                    ..
                } => " connection",
                _ => "",
            };
            seen.requests.insert(format!("{word}{detail}"));
        }
        (None, Some(expected), None) => {
            let code = code_named(vector, expected.split(' ').next().unwrap_or_default());
            let error = Request::parse(&frame).map(|request| render(&request));
            assert_eq!(
                error.as_ref().map_err(render_refusal),
                Err(expected.to_owned()),
                "{vector}: expected the request to be refused with {expected}, got {error:?}"
            );
            seen.refused.insert(code.as_str());
        }
        (None, None, Some(kind_of_payload)) => {
            check_server(vector, kind_of_payload, &frame);
            seen.server.insert(kind_of_payload.to_owned());
        }
        _ => panic!("{vector}: give exactly one of request:, refused: and server:"),
    }
}

fn reserialized<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("payload types serialize")
}

fn check_server(vector: &Vector, kind_of_payload: &str, frame: &Frame<'_>) {
    let text = std::str::from_utf8(frame.payload).unwrap_or_default();
    let json = |expected_kind: MessageType| {
        assert_eq!(frame.kind, expected_kind, "{vector}: frame type");
        assert_eq!(frame.flags, Flags::JSON, "{vector}: flags");
    };
    match kind_of_payload {
        "HELLO_REPLY" => {
            json(MessageType::Hello);
            let reply: HelloReply = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{vector}: not a HELLO answer: {error}"));
            assert_eq!(reply.status, "connected", "{vector}");
            assert!(reply.stats.is_some(), "{vector}: the answer carries stats");
            assert!(reply.connection_id.starts_with('c'), "{vector}");
            assert_eq!(reserialized(&reply), text, "{vector}: byte-exact JSON");
        }
        "JOIN_REPLY" | "LEAVE_REPLY" => {
            let (kind, status) = if kind_of_payload == "JOIN_REPLY" {
                (MessageType::JoinRoom, "joined")
            } else {
                (MessageType::LeaveRoom, "left")
            };
            json(kind);
            let reply: RoomReply = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{vector}: not a room answer: {error}"));
            assert_eq!(reply.status, status, "{vector}");
            assert_eq!(validate_room(&reply.room), Ok(reply.room.as_str()));
            assert_eq!(reserialized(&reply), text, "{vector}: byte-exact JSON");
        }
        "DELIVERY" => {
            json(MessageType::Message);
            match ServerMessage::parse(frame.payload) {
                Ok(ServerMessage::Delivery(delivery)) => {
                    assert_eq!(reserialized(&delivery), text, "{vector}: byte-exact JSON");
                }
                other => panic!("{vector}: not a delivery: {other:?}"),
            }
        }
        "MEMBER_EVENT" => {
            json(MessageType::Message);
            match ServerMessage::parse(frame.payload) {
                Ok(ServerMessage::Member(event)) => {
                    assert_eq!(reserialized(&event), text, "{vector}: byte-exact JSON");
                }
                other => panic!("{vector}: not a membership event: {other:?}"),
            }
        }
        "GAP" | "ACK" | "DIRECT" => {
            json(MessageType::Message);
            let again = match ServerMessage::parse(frame.payload) {
                Ok(ServerMessage::Gap(gap)) if kind_of_payload == "GAP" => reserialized(&gap),
                Ok(ServerMessage::Ack(ack)) if kind_of_payload == "ACK" => reserialized(&ack),
                Ok(ServerMessage::Direct(direct)) if kind_of_payload == "DIRECT" => {
                    reserialized(&direct)
                }
                other => panic!("{vector}: not a {kind_of_payload}: {other:?}"),
            };
            assert_eq!(again, text, "{vector}: byte-exact JSON");
        }
        "WHO_REPLY" => {
            json(MessageType::Who);
            let reply: WhoReply = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{vector}: not a WHO answer: {error}"));
            assert_eq!(reserialized(&reply), text, "{vector}: byte-exact JSON");
        }
        "SEQ_BINARY_DELIVERY" => {
            assert_eq!(frame.kind, MessageType::Message, "{vector}: frame type");
            assert_eq!(frame.flags, Flags::BINARY, "{vector}: flags");
            let delivery = SequencedBinaryDelivery::parse(frame.payload)
                .unwrap_or_else(|error| panic!("{vector}: not a sequenced delivery: {error}"));
            let mut again = Vec::new();
            delivery.encode(&mut again).expect("short names");
            assert_eq!(again, frame.payload, "{vector}: byte-exact layout");
        }
        "BINARY_DELIVERY" => {
            assert_eq!(frame.kind, MessageType::Message, "{vector}: frame type");
            assert_eq!(frame.flags, Flags::BINARY, "{vector}: flags");
            let delivery = BinaryDelivery::parse(frame.payload)
                .unwrap_or_else(|error| panic!("{vector}: not a binary delivery: {error}"));
            let mut again = Vec::new();
            delivery.encode(&mut again).expect("short names");
            assert_eq!(again, frame.payload, "{vector}: byte-exact layout");
        }
        "HEARTBEAT" => {
            assert_eq!(frame.kind, MessageType::Heartbeat, "{vector}: frame type");
            // An echo is itself a heartbeat the server would accept.
            assert!(
                matches!(Request::parse(frame), Ok(Request::Heartbeat { flags, payload })
                    if flags == frame.flags && payload == frame.payload),
                "{vector}: a HEARTBEAT echo must be a valid heartbeat"
            );
        }
        "ERROR" => {
            json(MessageType::Error);
            let error: ErrorPayload = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{vector}: not an ERROR payload: {error}"));
            assert_ne!(error.code, ErrorCode::Unknown, "{vector}: unknown code");
            assert_eq!(
                error.fatal,
                error.code.is_fatal(),
                "{vector}: `fatal` must match the code"
            );
            assert_eq!(reserialized(&error), text, "{vector}: byte-exact JSON");
        }
        other => panic!("{vector}: unknown server payload kind `{other}`"),
    }
}

fn check_malformed(vector: &Vector, seen: &mut Seen) {
    let expected = vector.get("decode-error").expect("malformed vector");
    for key in [
        "frame",
        "payload",
        "payload-hex",
        "request",
        "refused",
        "server",
    ] {
        assert!(
            vector.get(key).is_none(),
            "{vector}: a malformed vector has no `{key}:`"
        );
    }
    let code = code_named(vector, expected);
    let max = vector.max();
    let bytes = &vector.bytes;

    let error = match parse_frame(bytes, max) {
        Err(error) => error,
        Ok(other) => panic!("{vector}: expected {expected}, decoded {other:?}"),
    };
    assert_eq!(error.code(), code, "{vector}: got {error:?}");
    // The vector ends at the byte that proves the error.
    for cut in 0..bytes.len() {
        assert_eq!(
            parse_frame(&bytes[..cut], max),
            Ok(None),
            "{vector}: the first {cut} bytes should be merely incomplete"
        );
    }
    let (frames, failure) = decode_bytewise(bytes, max);
    assert!(frames.is_empty(), "{vector}: decoded {frames:?}");
    assert_eq!(
        failure,
        Some((bytes.len() - 1, error)),
        "{vector}: the decoder must fail at the last byte"
    );
    let variant = format!("{error:?}");
    let variant = variant.split(' ').next().unwrap_or_default();
    let detail = match error {
        DecodeError::BadFlags { flags: 0x03 } => " both",
        DecodeError::BadFlags { .. } => " reserved",
        DecodeError::TooLarge {
            max: DEFAULT_MAX_FRAME,
            ..
        } => " default max",
        _ => "",
    };
    seen.decode_errors.insert(format!("{variant}{detail}"));
}

#[test]
fn every_spec_vector_matches_the_code() {
    let vectors = extract_vectors(&spec_text());
    assert!(
        vectors.len() >= MIN_VECTORS,
        "SPEC.md has {} hex vectors; at least {MIN_VECTORS} expected",
        vectors.len()
    );
    let mut seen = Seen::default();
    for vector in &vectors {
        if vector.get("decode-error").is_some() {
            check_malformed(vector, &mut seen);
        } else {
            check_valid(vector, &mut seen);
        }
    }

    // Coverage: every message type, request, refusal, server payload and
    // framing error has at least one vector.
    let all_kinds: BTreeSet<_> = MessageType::ALL.iter().map(|kind| kind.name()).collect();
    assert_eq!(seen.kinds, all_kinds, "message types with a vector");
    let requests: BTreeSet<String> = [
        "HELLO",
        "JOIN",
        "LEAVE",
        "PUBLISH JSON",
        "PUBLISH BINARY",
        "HEARTBEAT",
        "CLIENT_ERROR",
        "JOIN since",
        "JOIN history",
        "PUBLISH JSON ack",
        "WHO",
        "DIRECT user",
        "DIRECT connection",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen.requests, requests, "requests with a vector");
    let refused: BTreeSet<_> = [
        ErrorCode::ParseError,
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidRoom,
    ]
    .map(ErrorCode::as_str)
    .into();
    assert_eq!(seen.refused, refused, "refusals with a vector");
    let server: BTreeSet<String> = [
        "HELLO_REPLY",
        "JOIN_REPLY",
        "LEAVE_REPLY",
        "DELIVERY",
        "MEMBER_EVENT",
        "BINARY_DELIVERY",
        "HEARTBEAT",
        "ERROR",
        "GAP",
        "ACK",
        "DIRECT",
        "WHO_REPLY",
        "SEQ_BINARY_DELIVERY",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen.server, server, "server payloads with a vector");
    let decode_errors: BTreeSet<String> = [
        "TooShort",
        "TooLarge",
        "TooLarge default max",
        "UnsupportedVersion",
        "UnknownType",
        "BadFlags reserved",
        "BadFlags both",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        seen.decode_errors, decode_errors,
        "framing errors with a vector"
    );
}

/// The lines of the section whose heading starts with `heading`.
fn section<'a>(spec: &'a str, heading: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = spec.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.starts_with(heading))
        .unwrap_or_else(|| panic!("SPEC.md has no section `{heading}`"));
    lines[start + 1..]
        .iter()
        .take_while(|line| !line.starts_with("##"))
        .copied()
        .collect()
}

/// The cells of a markdown table row, without the outer pipes.
fn cells(row: &str) -> Vec<&str> {
    row.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

#[test]
fn the_error_code_table_matches_the_code() {
    let spec = spec_text();
    let mut rows = Vec::new();
    for line in section(&spec, "## 4. Error codes") {
        let cells = cells(line);
        if let [name, fatality, ..] = cells[..]
            && let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'))
        {
            rows.push((name.to_owned(), fatality.to_owned()));
        }
    }
    let expected: Vec<(String, String)> = ErrorCode::ALL
        .iter()
        .map(|code| {
            let fatality = if code.is_fatal() {
                "fatal"
            } else {
                "non-fatal"
            };
            (code.as_str().to_owned(), fatality.to_owned())
        })
        .collect();
    assert_eq!(rows, expected, "SPEC.md section 4 against ErrorCode::ALL");
}

#[test]
fn the_message_type_table_matches_the_code() {
    let spec = spec_text();
    let mut rows = Vec::new();
    for line in section(&spec, "### 1.2 Message types") {
        let cells = cells(line);
        if let [byte, name, ..] = cells[..]
            && let Some(byte) = byte.strip_prefix("`0x").and_then(|b| b.strip_suffix('`'))
        {
            let byte = u8::from_str_radix(byte, 16).expect("a hex type byte");
            rows.push((byte, name.trim_matches('`').to_owned()));
        }
    }
    let expected: Vec<(u8, String)> = MessageType::ALL
        .iter()
        .map(|kind| (*kind as u8, kind.name().to_owned()))
        .collect();
    assert_eq!(rows, expected, "SPEC.md section 1.2 against MessageType");
}

#[test]
fn the_extractor_rejects_what_it_cannot_read() {
    // A sanity check of the harness itself, so a typo in SPEC.md fails loudly
    // instead of being skipped.
    let broken = "```hex\n# x\nframe: HELLO NONE\npayload-hex: empty\nrequest: HELLO {}\n00 00 00 03 01 01 0\n```\n";
    assert!(std::panic::catch_unwind(|| extract_vectors(broken)).is_err());
    let unknown_key = "```hex\nframes: HELLO NONE\n00\n```\n";
    assert!(std::panic::catch_unwind(|| extract_vectors(unknown_key)).is_err());
    let fine = "```hex\n# x\nframe: HELLO NONE\npayload-hex: empty\nrequest: HELLO {}\n00 00 00 03 01 01 00\n```\n";
    assert_eq!(
        extract_vectors(fine)[0].bytes,
        [0, 0, 0, 3, 1, 1, 0],
        "a well-formed block"
    );
}
