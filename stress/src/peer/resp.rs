//! The part of Redis's RESP (versions 2 and 3) the bench needs: commands out,
//! replies and pushes in, sans-IO.
//!
//! Reading borrows from the caller's buffer and allocates nothing: [`parse`]
//! walks one whole reply (checking it as it goes, every length capped before
//! anything is trusted) and hands back a [`Reply`] whose aggregates are read
//! lazily with [`Reply::items`]. Needing more bytes is `Ok(None)`, not an
//! error; bytes that are not RESP are an [`Error`], and never a panic.
//!
//! ```text
//! >3\r\n$7\r\nmessage\r\n$2\r\nr1\r\n$5\r\nhello\r\n     a delivery (RESP3 push)
//! *3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n           a subscribe confirmation (RESP2)
//! ```

use std::fmt;

/// Longest header or simple line accepted, CRLF excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted (Redis's own default limit is 512 MiB; the
/// bench never sends more than a few KiB).
pub const MAX_BULK: usize = 64 * 1024 * 1024;
/// Most elements one aggregate may declare.
pub const MAX_ITEMS: usize = 1 << 20;
/// Deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 16;

/// Why bytes are not a RESP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A type byte RESP doesn't have.
    UnknownType(u8),
    /// A length or integer that is not a decimal number in range.
    BadNumber,
    /// A negative length other than -1 (null).
    NegativeLength,
    /// A length above the caps.
    TooLong,
    /// Aggregates nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A line without CRLF within [`MAX_LINE`] bytes, or a bulk string not
    /// followed by CRLF.
    BadLineEnd,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            Error::BadNumber => f.write_str("a RESP length or integer is not a number"),
            Error::NegativeLength => f.write_str("a RESP length is negative"),
            Error::TooLong => f.write_str("a RESP length is above the cap"),
            Error::TooDeep => f.write_str("RESP aggregates nested too deep"),
            Error::BadLineEnd => f.write_str("a RESP line does not end in CRLF"),
        }
    }
}

/// One reply, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+`, and the RESP3 scalars read as text: `,` double, `(` big
    /// number, `#` boolean.
    Simple(&'a [u8]),
    /// `-`: an error line, such as `ERR unknown command`.
    Error(&'a [u8]),
    /// `:`
    Integer(i64),
    /// `$`, `=` verbatim and `!` blob error; `None` for a null (`$-1`).
    Bulk(Option<&'a [u8]>),
    /// `_` (RESP3), or a null array `*-1`.
    Null,
    /// `*` array, `>` push, `~` set, `%` map and `|` attribute (their
    /// elements counted one by one, so a map of n pairs has 2n items).
    Aggregate {
        kind: u8,
        len: usize,
        /// The encoded items, back to back.
        body: &'a [u8],
    },
}

impl<'a> Reply<'a> {
    /// The items of an aggregate (none for anything else), parsed lazily.
    pub fn items(&self) -> Items<'a> {
        match *self {
            Reply::Aggregate { len, body, .. } => Items {
                rest: body,
                left: len,
            },
            _ => Items { rest: &[], left: 0 },
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn text(&self) -> Option<&'a [u8]> {
        match *self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }
}

/// The items of an aggregate; they were checked when it was parsed.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Reply<'a>;
    fn next(&mut self) -> Option<Reply<'a>> {
        if self.left == 0 {
            return None;
        }
        // The aggregate was walked whole when it was parsed, so this can't
        // fail; if it somehow did, the iteration just ends.
        let (reply, used) = parse_at(self.rest, 0).ok().flatten()?;
        self.rest = self.rest.get(used..).unwrap_or_default();
        self.left -= 1;
        Some(reply)
    }
}

/// Parses one reply from the start of `bytes`: `Ok(Some((reply, bytes
/// used)))`, `Ok(None)` when more bytes are needed, or an error.
pub fn parse(bytes: &[u8]) -> Result<Option<(Reply<'_>, usize)>, Error> {
    parse_at(bytes, 0)
}

fn parse_at(bytes: &[u8], depth: usize) -> Result<Option<(Reply<'_>, usize)>, Error> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    if !b"+,(#-:_$=!*>~%|".contains(&kind) {
        return Err(Error::UnknownType(kind));
    }
    let Some((line, mut at)) = line(bytes, 1)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' | b',' | b'(' | b'#' => Reply::Simple(line),
        b'-' => Reply::Error(line),
        b':' => Reply::Integer(integer(line)?),
        b'_' => Reply::Null,
        b'$' | b'=' | b'!' => {
            let Some(len) = length(line, MAX_BULK)? else {
                return Ok(Some((Reply::Bulk(None), at)));
            };
            let end = at + len;
            if bytes.len() < end + 2 {
                return Ok(None);
            }
            if &bytes[end..end + 2] != b"\r\n" {
                return Err(Error::BadLineEnd);
            }
            let data = &bytes[at..end];
            at = end + 2;
            Reply::Bulk(Some(data))
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let Some(len) = length(line, MAX_ITEMS)? else {
                return Ok(Some((Reply::Null, at)));
            };
            let len = if matches!(kind, b'%' | b'|') {
                len.checked_mul(2).ok_or(Error::TooLong)?
            } else {
                len
            };
            if depth + 1 > MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            let start = at;
            for _ in 0..len {
                match parse_at(&bytes[at..], depth + 1)? {
                    Some((_, used)) => at += used,
                    None => return Ok(None),
                }
            }
            Reply::Aggregate {
                kind,
                len,
                body: &bytes[start..at],
            }
        }
        other => return Err(Error::UnknownType(other)),
    };
    Ok(Some((reply, at)))
}

/// The line starting at `from` (CRLF excluded) and where the next one
/// starts; `None` when its CRLF hasn't arrived yet.
fn line(bytes: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Error> {
    let rest = bytes.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(Error::BadLineEnd),
        Some(n) if window[n - 1] == b'\r' => Ok(Some((&rest[..n - 1], from + n + 1))),
        Some(_) => Err(Error::BadLineEnd),
        None if rest.len() > MAX_LINE + 1 => Err(Error::BadLineEnd),
        None => Ok(None),
    }
}

fn integer(text: &[u8]) -> Result<i64, Error> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(Error::BadNumber);
    }
    let mut value: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(Error::BadNumber);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(d as i64))
            .ok_or(Error::BadNumber)?;
    }
    Ok(if negative { -value } else { value })
}

/// A length: `None` for -1 (null), an error for other negatives or above
/// `cap`.
fn length(text: &[u8], cap: usize) -> Result<Option<usize>, Error> {
    match integer(text)? {
        -1 => Ok(None),
        n if n < 0 => Err(Error::NegativeLength),
        n if n as u64 > cap as u64 => Err(Error::TooLong),
        n => Ok(Some(n as usize)),
    }
}

/// Appends a command, an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// A PUBLISH of `content` to `channel`, and the offset of the content in it.
pub fn publish(channel: &str, content: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    command(&mut out, &[b"PUBLISH", channel.as_bytes(), content]);
    // The content is the last argument: it ends two bytes (CRLF) before the
    // command does.
    let at = out.len() - 2 - content.len();
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from redis-server 7.0.15: `HELLO 3`, `SUBSCRIBE r1 r2` and a
    /// PUBLISH to r1 on the same connection.
    const RESP3_SESSION: &[u8] = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nr2\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$2\r\nr1\r\n$5\r\nhello\r\n:1\r\n";

    /// Captured: RESP2 `SUBSCRIBE r1 r2`, a refused PUBLISH, and PING while
    /// subscribed.
    const RESP2_SESSION: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nr2\r\n:2\r\n-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n";

    /// Every reply in `bytes`, each as (kind, first item's text, item count).
    fn summary(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((reply, used)) = parse(&bytes[at..]).unwrap() {
            at += used;
            out.push(match reply {
                Reply::Aggregate { kind, len, .. } => {
                    let items: Vec<String> = reply
                        .items()
                        .map(|i| match i {
                            Reply::Integer(n) => n.to_string(),
                            other => {
                                String::from_utf8_lossy(other.text().unwrap_or(b"?")).into_owned()
                            }
                        })
                        .collect();
                    format!("{}{len} {}", kind as char, items.join(" "))
                }
                Reply::Error(e) => format!("-{}", String::from_utf8_lossy(&e[..3])),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(at, bytes.len());
        out
    }

    #[test]
    fn captured_sessions_parse() {
        let three = summary(RESP3_SESSION);
        assert_eq!(three.len(), 5);
        assert!(three[0].starts_with("%14 server redis version 7.0.15"));
        assert_eq!(three[1], ">3 subscribe r1 1");
        assert_eq!(three[2], ">3 subscribe r2 2");
        assert_eq!(three[3], ">3 message r1 hello");
        assert_eq!(three[4], "Integer(1)");
        assert_eq!(
            summary(RESP2_SESSION),
            ["*3 subscribe r1 1", "*3 subscribe r2 2", "-ERR", "*2 pong "]
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_every_split_gives_the_same_replies() {
        for session in [RESP3_SESSION, RESP2_SESSION] {
            let whole = summary(session);
            // Each reply's own prefixes are incomplete.
            let (_, first) = parse(session).unwrap().unwrap();
            for cut in 0..first {
                assert_eq!(parse(&session[..cut]), Ok(None), "cut at {cut}");
            }
            // Fed in two pieces split anywhere, as a reader would: parse
            // what is complete, keep the rest, append the next piece.
            for cut in 0..=session.len() {
                let mut buffer = session[..cut].to_vec();
                let mut consumed = 0;
                let mut got = 0;
                for piece in [&[][..], &session[cut..]] {
                    buffer.extend_from_slice(piece);
                    while let Some((_, used)) = parse(&buffer[consumed..]).unwrap() {
                        consumed += used;
                        got += 1;
                    }
                }
                assert_eq!(got, whole.len(), "split at {cut}");
                assert_eq!(consumed, session.len());
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], Error)] = &[
            (b"?oops\r\n", Error::UnknownType(b'?')),
            (b"$abc\r\n", Error::BadNumber),
            (b"$-2\r\n", Error::NegativeLength),
            (b"*-5\r\n", Error::NegativeLength),
            (b"$5\r\nhelloXX", Error::BadLineEnd),
            (b"+ok\n", Error::BadLineEnd),
            (b"\n", Error::UnknownType(b'\n')),
            (b"+\n", Error::BadLineEnd),
            (b":99999999999999999999\r\n", Error::BadNumber),
            (b":\r\n", Error::BadNumber),
            (b"$99999999999\r\n", Error::TooLong),
            (b"*99999999999\r\n", Error::TooLong),
            (b"%9223372036854775807\r\n", Error::TooLong),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                parse(bytes),
                Err(*error),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(Error::TooDeep));
        let mut long = b"+".to_vec();
        long.resize(MAX_LINE + 3, b'a');
        assert_eq!(parse(&long), Err(Error::BadLineEnd));
        // Within the cap a long line is just incomplete.
        assert_eq!(parse(&long[..MAX_LINE]), Ok(None));
        // Nulls.
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Reply::Bulk(None), 5))));
        assert_eq!(parse(b"*-1\r\n"), Ok(Some((Reply::Null, 5))));
        assert_eq!(parse(b"_\r\n"), Ok(Some((Reply::Null, 3))));
    }

    #[test]
    fn a_malformed_item_inside_an_aggregate_is_found_at_parse() {
        assert_eq!(parse(b"*2\r\n:1\r\n$x\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"*2\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", b"r1", b"r2"]);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$2\r\nr1\r\n$2\r\nr2\r\n");
        let (frame, at) = publish("room", b"\"abc\"");
        assert_eq!(
            frame,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$5\r\n\"abc\"\r\n"
        );
        assert_eq!(&frame[at..at + 5], b"\"abc\"");
    }
}
