//! The part of the NATS client protocol the bench needs, sans-IO: CONNECT,
//! SUB, PUB, PING and PONG out; INFO, MSG, HMSG, PING, PONG, +OK and -ERR in.
//!
//! [`parse`] reads one server operation from the start of a buffer and
//! borrows its parts from it; needing more bytes is `Ok(None)`. The control
//! line and the payload size are capped before anything is buffered, and
//! bytes that are not the protocol are an [`Error`], never a panic.
//!
//! ```text
//! MSG r1 7 5\r\nhello\r\n            a delivery: subject, sid, size, payload
//! MSG r1 7 reply.x 2\r\nhi\r\n       the same with a reply subject
//! PING\r\n                           the server checking on us: answer PONG
//! ```

use std::fmt;

/// Longest control line accepted, CRLF excluded (the server's own default
/// for what clients send is 4 KiB; its INFO can be longer in a cluster).
pub const MAX_LINE: usize = 64 * 1024;
/// Largest payload accepted (the server's default `max_payload` is 1 MiB).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Why bytes are not a NATS server operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An operation name the protocol doesn't have.
    UnknownOp,
    /// MSG or HMSG with the wrong number of arguments.
    BadArgs,
    /// A size that is not a decimal number, or headers larger than the total.
    BadNumber,
    /// A size above [`MAX_PAYLOAD`].
    TooLong,
    /// A control line without CRLF within [`MAX_LINE`] bytes, or a payload
    /// not followed by CRLF.
    BadLineEnd,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownOp => "unknown NATS operation",
            Error::BadArgs => "a NATS MSG with the wrong number of arguments",
            Error::BadNumber => "a NATS size is not a number",
            Error::TooLong => "a NATS payload size is above the cap",
            Error::BadLineEnd => "a NATS line does not end in CRLF",
        })
    }
}

/// One server operation, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO {json}`: the JSON text.
    Info(&'a [u8]),
    /// `MSG` or `HMSG`: a delivery.
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        /// HMSG's header block (`NATS/1.0\r\n...`), `None` for MSG.
        headers: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR 'text'`: the text after `-ERR `.
    Err(&'a [u8]),
}

/// Parses one operation from the start of `bytes`: `Ok(Some((op, bytes
/// used)))`, `Ok(None)` when more bytes are needed, or an error.
pub fn parse(bytes: &[u8]) -> Result<Option<(Op<'_>, usize)>, Error> {
    // The operation name can be judged before its line is complete, so a
    // stream of garbage fails at once rather than after MAX_LINE bytes.
    let name_end = bytes
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    let name = &bytes[..name_end];
    const NAMES: [&[u8]; 7] = [b"INFO", b"MSG", b"HMSG", b"PING", b"PONG", b"+OK", b"-ERR"];
    let known_prefix = NAMES
        .iter()
        .any(|n| n.len() >= name.len() && n[..name.len()].eq_ignore_ascii_case(name));
    if !known_prefix {
        return Err(Error::UnknownOp);
    }
    let Some(line_len) = find_crlf(bytes)? else {
        return Ok(None);
    };
    let line = &bytes[..line_len];
    let after = line_len + 2;
    let args = &line[name.len().min(line.len())..];
    let op = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let parsed = if op(b"PING") {
        Op::Ping
    } else if op(b"PONG") {
        Op::Pong
    } else if op(b"+OK") {
        Op::Ok
    } else if op(b"-ERR") {
        Op::Err(trim(args))
    } else if op(b"INFO") {
        Op::Info(trim(args))
    } else if op(b"MSG") || op(b"HMSG") {
        return message(bytes, args, after, op(b"HMSG"));
    } else {
        return Err(Error::UnknownOp);
    };
    Ok(Some((parsed, after)))
}

/// MSG `subject sid [reply] size` or HMSG `subject sid [reply] hsize size`,
/// then the payload and CRLF.
fn message<'a>(
    bytes: &'a [u8],
    args: &'a [u8],
    after: usize,
    with_headers: bool,
) -> Result<Option<(Op<'a>, usize)>, Error> {
    let mut parts: [&[u8]; 5] = [&[]; 5];
    let mut count = 0;
    for part in args
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|p| !p.is_empty())
    {
        if count == parts.len() {
            return Err(Error::BadArgs);
        }
        parts[count] = part;
        count += 1;
    }
    let sizes = if with_headers { 2 } else { 1 };
    if count != 2 + sizes && count != 3 + sizes {
        return Err(Error::BadArgs);
    }
    let reply = (count == 3 + sizes).then_some(parts[2]);
    let total = size(parts[count - 1])?;
    let header_len = if with_headers {
        let h = size(parts[count - 2])?;
        if h > total {
            return Err(Error::BadNumber);
        }
        h
    } else {
        0
    };
    let end = after + total;
    if bytes.len() < end + 2 {
        return Ok(None);
    }
    if &bytes[end..end + 2] != b"\r\n" {
        return Err(Error::BadLineEnd);
    }
    let body = &bytes[after..end];
    Ok(Some((
        Op::Msg {
            subject: parts[0],
            sid: parts[1],
            reply,
            headers: with_headers.then(|| &body[..header_len]),
            payload: &body[header_len..],
        },
        end + 2,
    )))
}

/// Where the first CRLF is; `None` while it may still come.
fn find_crlf(bytes: &[u8]) -> Result<Option<usize>, Error> {
    let window = &bytes[..bytes.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(n) if n > 0 && window[n - 1] == b'\r' => Ok(Some(n - 1)),
        Some(_) => Err(Error::BadLineEnd),
        None if bytes.len() > MAX_LINE + 1 => Err(Error::BadLineEnd),
        None => Ok(None),
    }
}

fn size(text: &[u8]) -> Result<usize, Error> {
    if text.is_empty() || text.len() > 12 {
        return Err(if text.len() > 12 {
            Error::TooLong
        } else {
            Error::BadNumber
        });
    }
    let mut value = 0usize;
    for &b in text {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(Error::BadNumber);
        }
        value = value * 10 + d as usize;
    }
    if value > MAX_PAYLOAD {
        return Err(Error::TooLong);
    }
    Ok(value)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// CONNECT without acknowledgements (`verbose` off); `echo: false` keeps a
/// client's own messages from coming back to it, as in Relay.
pub fn connect(out: &mut Vec<u8>, echo: bool) {
    out.extend_from_slice(
        format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":{echo},\"name\":\"relay-stress\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1}}\r\n",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    );
}

/// SUB `subject` with subscription id `sid`.
pub fn sub(out: &mut Vec<u8>, subject: &str, sid: usize) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// A PUB of `content` to `subject`, and the offset of the content in it.
pub fn publish(subject: &str, content: &[u8]) -> (Vec<u8>, usize) {
    let mut out = format!("PUB {subject} {}\r\n", content.len()).into_bytes();
    let at = out.len();
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from nats-server 2.9.10: INFO on connect, PONG for our PING,
    /// three deliveries (plain, with a reply subject, empty), and the answer
    /// to a line that is not an operation.
    const SESSION: &[u8] = b"INFO {\"server_id\":\"NA7J55ZICJ6FZSYDFQQ4S7FE56SDCIPGV2TRW5CJKVTVEH7WIDX7IFO2\",\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":14222,\"headers\":true,\"max_payload\":1048576,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} \r\nPONG\r\nMSG r1 7 5\r\nhello\r\nMSG r1 7 reply.x 2\r\nhi\r\nMSG r1 7 0\r\n\r\n-ERR 'Unknown Protocol Operation'\r\nPING\r\n";

    fn all(bytes: &[u8]) -> Vec<Op<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((op, used)) = parse(&bytes[at..]).unwrap() {
            at += used;
            out.push(op);
        }
        assert_eq!(at, bytes.len());
        out
    }

    #[test]
    fn a_captured_session_parses() {
        let ops = all(SESSION);
        assert_eq!(ops.len(), 7);
        assert!(
            matches!(ops[0], Op::Info(json) if json.starts_with(b"{\"server_id\"") && json.ends_with(b"}"))
        );
        assert_eq!(ops[1], Op::Pong);
        let msg = |reply, payload| Op::Msg {
            subject: b"r1",
            sid: b"7",
            reply,
            headers: None,
            payload,
        };
        assert_eq!(ops[2], msg(None, b"hello"));
        assert_eq!(ops[3], msg(Some(&b"reply.x"[..]), b"hi"));
        assert_eq!(ops[4], msg(None, b""));
        assert_eq!(ops[5], Op::Err(b"'Unknown Protocol Operation'"));
        assert_eq!(ops[6], Op::Ping);
    }

    #[test]
    fn hmsg_splits_headers_from_payload_and_names_are_case_blind() {
        let bytes = b"hmsg s 1 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n+ok\r\n";
        let ops = all(bytes);
        assert_eq!(
            ops[0],
            Op::Msg {
                subject: b"s",
                sid: b"1",
                reply: None,
                headers: Some(b"NATS/1.0\r\nA: b\r\n\r\n"),
                payload: b"hello",
            }
        );
        assert_eq!(ops[1], Op::Ok);
    }

    #[test]
    fn every_split_point_gives_the_same_operations() {
        let whole = all(SESSION).len();
        for cut in 0..=SESSION.len() {
            let mut buffer = SESSION[..cut].to_vec();
            let mut consumed = 0;
            let mut got = 0;
            for piece in [&[][..], &SESSION[cut..]] {
                buffer.extend_from_slice(piece);
                while let Some((_, used)) = parse(&buffer[consumed..]).unwrap() {
                    consumed += used;
                    got += 1;
                }
            }
            assert_eq!((got, consumed), (whole, SESSION.len()), "split at {cut}");
        }
        // And each prefix of the first delivery alone is incomplete.
        let msg = b"MSG r1 7 5\r\nhello\r\n";
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], Error)] = &[
            (b"HELLO\r\n", Error::UnknownOp),
            (b"X", Error::UnknownOp),
            (b"PINGX\r\n", Error::UnknownOp),
            (b"MSG r1\r\n", Error::BadArgs),
            (b"MSG a b c d e\r\n", Error::BadArgs),
            (b"MSG r1 1 x5\r\n", Error::BadNumber),
            (b"MSG r1 1 -5\r\n", Error::BadNumber),
            (b"MSG r1 1 99999999999999\r\n", Error::TooLong),
            (b"MSG r1 1 999999999\r\n", Error::TooLong),
            (b"HMSG r1 1 9 5\r\n", Error::BadNumber),
            (b"MSG r1 1 2\r\nhiXX", Error::BadLineEnd),
            (b"PING\n", Error::BadLineEnd),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                parse(bytes),
                Err(*error),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut long = b"INFO ".to_vec();
        long.resize(MAX_LINE + 2, b'{');
        assert_eq!(parse(&long), Err(Error::BadLineEnd));
        assert_eq!(parse(&long[..MAX_LINE]), Ok(None));
        assert_eq!(parse(b"PI"), Ok(None));
    }

    #[test]
    fn client_operations_encode() {
        let mut out = Vec::new();
        sub(&mut out, "room-1", 3);
        assert_eq!(out, b"SUB room-1 3\r\n");
        let (frame, at) = publish("room-1", b"\"abc\"");
        assert_eq!(frame, b"PUB room-1 5\r\n\"abc\"\r\n");
        assert_eq!(&frame[at..at + 5], b"\"abc\"");
        let mut connect_line = Vec::new();
        connect(&mut connect_line, false);
        assert!(connect_line.starts_with(b"CONNECT {\"verbose\":false"));
        assert!(connect_line.ends_with(b"\r\n"));
        let json = &connect_line[8..connect_line.len() - 2];
        let value: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(value["echo"], false);
    }
}
