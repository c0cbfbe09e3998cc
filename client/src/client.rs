//! The blocking [`Client`]: one TCP connection to a relay.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use protocol::{
    Ack, BinaryPublish, EncodeError, Flags, Hello, HelloReply, Member, MessageType, Recipient,
    Recovery, RequestId, Since, Stats, WhoReply, abort_frame, begin_frame, encode_json, end_frame,
    validate_room,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{ClientError, DisconnectReason};
use crate::event::{Event, HeartbeatReply, RoomAck};
use crate::reader::{self, ECHO_NO, ECHO_YES, Shared};
use crate::tls::{self, ReadHalf, TlsOptions, WriteHalf};

/// How a [`Client`] connects and buffers.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for the TCP connection (per resolved address).
    pub connect_timeout: Duration,
    /// The largest frame `length` accepted from the server. Larger than the
    /// protocol default (1 MiB) because a server may be configured with a
    /// larger `--max-frame`; the decoder never allocates for a declared length.
    pub max_frame: u32,
    /// Events the reader thread may hold before it stops reading the socket.
    pub event_capacity: usize,
    /// Give up a write that makes no progress for this long (`None`: wait).
    pub write_timeout: Option<Duration>,
    /// Speak TLS (a server's `--tls-addr` port); `None` is plain TCP. The
    /// handshake must finish within `connect_timeout`.
    pub tls: Option<TlsOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            max_frame: 16 * 1024 * 1024,
            event_capacity: 4096,
            write_timeout: None,
            tls: None,
        }
    }
}

/// The write half: the socket (plain or TLS) and a buffer reused for
/// encoding.
#[derive(Debug)]
struct Writer {
    stream: WriteHalf,
    buf: Vec<u8>,
}

/// A blocking connection to a Relay server.
///
/// Sending and receiving are independent: every method takes `&self` and
/// `Client` is `Send + Sync`, so one thread may send (`join`, `send_text`, ...)
/// while another reads events (`recv`, `recv_timeout`), e.g. with
/// [`std::thread::scope`] or an `Arc<Client>`. A reader thread owned by the
/// client decodes the socket into [`Event`]s.
///
/// The `*_and_wait` helpers, [`Client::hello`], [`Client::stats`] and
/// [`Client::wait_for`] read events until the awaited one arrives; the events
/// they pass over are kept, in order, and returned by the next `recv` calls.
/// Don't use them while another thread is reading events.
///
/// ```no_run
/// use std::time::Duration;
/// let t = Duration::from_secs(5);
/// let client = client::Client::connect("127.0.0.1:4000")?;
/// client.hello_as(Some("alice"), false, t)?;
/// client.join_and_wait("physics", t)?;
/// client.send_text("physics", "hello")?;
/// while let Some(event) = client.recv() {
///     println!("{event:?}");
/// }
/// # Ok::<(), client::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Client {
    writer: Mutex<Writer>,
    /// A handle on the socket outside the writer's lock, so `shutdown` works
    /// while another thread is blocked in a write the server does not read.
    control: TcpStream,
    events: Receiver<Event>,
    /// Events read by a wait helper that were not the one it waited for.
    pending: Mutex<VecDeque<Event>>,
    shared: Arc<Shared>,
    next_seq: AtomicU64,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    reader: Option<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The version this library announces in HELLO.
pub const CLIENT_VERSION: &str = concat!("relay-client/", env!("CARGO_PKG_VERSION"));

impl Client {
    /// Connects to `addr` (e.g. `"127.0.0.1:4000"`, `("localhost", 4000)` or a
    /// `SocketAddr`) with [`Options::default`]. No HELLO is sent yet.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(addr, &Options::default())
    }

    /// Connects to `addr` with the given options.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        options: &Options,
    ) -> Result<Client, ClientError> {
        let addrs = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                addr: "the server address".into(),
                source,
            })?;
        Client::connect_addrs(addrs, "the server address", None, options)
    }

    /// Connects to `host` and `port`; errors name them.
    pub fn connect_host(host: &str, port: u16, options: &Options) -> Result<Client, ClientError> {
        let label = format!("{host}:{port}");
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                addr: label.clone(),
                source,
            })?;
        Client::connect_addrs(addrs, &label, Some(host), options)
    }

    /// `host` is the name TLS checks the certificate against (by default;
    /// see [`TlsOptions::server_name`]); without one, the address is.
    fn connect_addrs(
        addrs: impl Iterator<Item = SocketAddr>,
        label: &str,
        host: Option<&str>,
        options: &Options,
    ) -> Result<Client, ClientError> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, options.connect_timeout) {
                Ok(stream) => match &options.tls {
                    None => return Client::from_stream(stream, options),
                    Some(tls) => {
                        let host = host.map_or_else(|| addr.ip().to_string(), str::to_owned);
                        return Client::from_tls_stream(stream, &host, tls, options);
                    }
                },
                Err(error) => {
                    last = Some(match error.kind() {
                        io::ErrorKind::ConnectionRefused => ClientError::ConnectionRefused { addr },
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                            ClientError::ConnectTimeout {
                                addr,
                                after: options.connect_timeout,
                            }
                        }
                        _ => ClientError::Connect {
                            addr: addr.to_string(),
                            source: error,
                        },
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: label.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"),
        }))
    }

    /// Wraps an already connected stream (no HELLO is sent yet); plain TCP,
    /// whatever `options.tls` says.
    pub fn from_stream(stream: TcpStream, options: &Options) -> Result<Client, ClientError> {
        stream.set_nodelay(true).map_err(ClientError::Io)?;
        let read_half = stream.try_clone().map_err(ClientError::Io)?;
        let control = stream.try_clone().map_err(ClientError::Io)?;
        Client::from_halves(
            ReadHalf::Plain(read_half),
            WriteHalf::Plain(stream),
            control,
            options,
        )
    }

    /// Runs the TLS handshake on an already connected stream, checking the
    /// server's certificate against `host`, and wraps it (no HELLO is sent
    /// yet).
    pub fn from_tls_stream(
        mut stream: TcpStream,
        host: &str,
        tls: &TlsOptions,
        options: &Options,
    ) -> Result<Client, ClientError> {
        stream.set_nodelay(true).map_err(ClientError::Io)?;
        let config = tls.client_config().map_err(ClientError::Tls)?;
        let name = tls.name_for(host).map_err(ClientError::Tls)?;
        let conn = tls::handshake(&mut stream, config, name, options.connect_timeout)
            .map_err(ClientError::Tls)?;
        let read_half = stream.try_clone().map_err(ClientError::Io)?;
        let control = stream.try_clone().map_err(ClientError::Io)?;
        let (read, write) = tls::split(conn, read_half, stream);
        Client::from_halves(ReadHalf::Tls(read), WriteHalf::Tls(write), control, options)
    }

    fn from_halves(
        read: ReadHalf,
        write: WriteHalf,
        control: TcpStream,
        options: &Options,
    ) -> Result<Client, ClientError> {
        control
            .set_write_timeout(options.write_timeout)
            .map_err(ClientError::Io)?;
        let local_addr = control.local_addr().map_err(ClientError::Io)?;
        let peer_addr = control.peer_addr().map_err(ClientError::Io)?;
        let (sender, events) = crossbeam_channel::bounded(options.event_capacity.max(1));
        let shared = Arc::new(Shared::new());
        let reader = reader::spawn(
            read,
            control.try_clone().map_err(ClientError::Io)?,
            options.max_frame,
            sender,
            Arc::clone(&shared),
        )
        .map_err(ClientError::Io)?;
        Ok(Client {
            writer: Mutex::new(Writer {
                stream: write,
                buf: Vec::with_capacity(4096),
            }),
            control,
            events,
            pending: Mutex::new(VecDeque::new()),
            shared,
            next_seq: AtomicU64::new(1),
            local_addr,
            peer_addr,
            reader: Some(reader),
        })
    }

    /// This side's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The server's name for this connection (`c17`), once a HELLO answer
    /// has been read; other members see it as `from`.
    pub fn connection_id(&self) -> Option<String> {
        lock(&self.shared.connection_id).clone()
    }

    /// Whether the server answers HEARTBEATs, as far as this client knows:
    /// `None` before the first HELLO answer. A Relay v1 server announces
    /// `idleTimeoutMs` in it and echoes every HEARTBEAT (`Some(true)`); the
    /// original Node.js server announces nothing and echoes none
    /// (`Some(false)`, until an echo arrives after all).
    pub fn server_echoes_heartbeats(&self) -> Option<bool> {
        match self.shared.heartbeat_echo.load(Ordering::Relaxed) {
            ECHO_YES => Some(true),
            ECHO_NO => Some(false),
            _ => None,
        }
    }

    /// Why the connection ended, once it has.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        self.shared.reason()
    }

    /// Whether the connection is still up, as far as the reader thread knows.
    pub fn is_connected(&self) -> bool {
        self.shared.reason().is_none()
    }

    // ---- sending -------------------------------------------------------

    /// Encodes one frame into the connection's buffer with `encode`, checks
    /// it against the server's frame limit, and sends it.
    fn send_with(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        if let Some(reason) = self.shared.reason() {
            return Err(ClientError::Disconnected(reason));
        }
        let max = self.shared.server_max_frame.load(Ordering::Relaxed);
        let mut writer = lock(&self.writer);
        let Writer { stream, buf } = &mut *writer;
        buf.clear();
        encode(buf)?;
        let length = buf.len() - protocol::LENGTH_PREFIX;
        if length > max as usize {
            return Err(ClientError::TooLarge { bytes: length, max });
        }
        let result = stream.write_all(buf);
        if buf.capacity() > 256 * 1024 {
            *buf = Vec::with_capacity(4096);
        }
        result.map_err(|error| self.write_error(error))
    }

    /// A frame this client could not encode.
    fn encode_error(&self, error: EncodeError) -> ClientError {
        match error {
            EncodeError::TooLarge { payload_len } => ClientError::TooLarge {
                bytes: payload_len,
                max: self.shared.server_max_frame.load(Ordering::Relaxed),
            },
            EncodeError::NotJson => {
                ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, error))
            }
        }
    }

    fn write_error(&self, error: io::Error) -> ClientError {
        match self.shared.reason() {
            Some(reason) => ClientError::Disconnected(reason),
            None => ClientError::Io(error),
        }
    }

    fn json_frame<T: Serialize + ?Sized>(
        &self,
        kind: MessageType,
        value: &T,
    ) -> Result<(), ClientError> {
        self.send_with(|buf| {
            encode_json(buf, kind, value)
                .map(drop)
                .map_err(|error| self.encode_error(error))
        })
    }

    /// Sends a HELLO without waiting for the answer (an [`Event::Hello`]).
    pub fn send_hello(&self, hello: &Hello) -> Result<(), ClientError> {
        if hello.binary_seq {
            // Set before the server can answer in the new layout.
            self.shared.binary_seq.store(true, Ordering::Relaxed);
        }
        self.json_frame(MessageType::Hello, hello)
    }

    /// Sends a HELLO and waits for the server's answer.
    pub fn hello(&self, hello: &Hello, timeout: Duration) -> Result<HelloReply, ClientError> {
        self.send_hello(hello)?;
        self.wait_for(timeout, "HELLO answer", |event| match event {
            Event::Hello(reply) => Some(reply.clone()),
            _ => None,
        })
    }

    /// HELLO with a user name (`None`: anonymous) and whether to receive
    /// copies of this client's own messages; waits for the answer.
    pub fn hello_as(
        &self,
        user: Option<&str>,
        echo: bool,
        timeout: Duration,
    ) -> Result<HelloReply, ClientError> {
        self.greet(user, None, echo, timeout)
    }

    /// HELLO with a token, for a server that requires authentication
    /// (SPEC.md 11.1); waits for the answer. The server takes the user from
    /// the token: `user`, if given, must be the token's (else the fatal
    /// `AUTH_FAILED`, as for a missing, wrong or expired token).
    pub fn hello_with_token(
        &self,
        user: Option<&str>,
        token: &str,
        echo: bool,
        timeout: Duration,
    ) -> Result<HelloReply, ClientError> {
        self.greet(user, Some(token), echo, timeout)
    }

    fn greet(
        &self,
        user: Option<&str>,
        token: Option<&str>,
        echo: bool,
        timeout: Duration,
    ) -> Result<HelloReply, ClientError> {
        let hello = Hello {
            user_id: user.map(str::to_owned),
            client_version: Some(CLIENT_VERSION.to_owned()),
            echo,
            id: None,
            token: token.map(|token| protocol::Token(token.to_owned())),
            ..Hello::default()
        };
        self.hello(&hello, timeout)
    }

    /// Replaces the connection's token before it expires (SPEC.md 11.1):
    /// HELLO again with the new one, for the same user. Rooms the new
    /// token does not allow are left, each with a non-fatal `FORBIDDEN`
    /// event before the answer.
    pub fn refresh_token(&self, token: &str, timeout: Duration) -> Result<HelloReply, ClientError> {
        let hello = Hello {
            token: Some(protocol::Token(token.to_owned())),
            ..Hello::default()
        };
        self.hello(&hello, timeout)
    }

    /// The server's counters at this moment: sends HELLO again (which an open
    /// connection may do; its fields are ignored) and reads the answer's stats.
    ///
    /// A server whose answer has none (the original Node.js server) gives
    /// [`ClientError::NotAvailable`].
    pub fn stats(&self, timeout: Duration) -> Result<Stats, ClientError> {
        let reply = self.hello(&Hello::default(), timeout)?;
        reply.stats.ok_or(ClientError::NotAvailable {
            what: "the server's counters",
            why: "its HELLO answer carries no stats",
        })
    }

    fn room(room: &str) -> Result<&str, ClientError> {
        validate_room(room).map_err(|reason| ClientError::InvalidRoom {
            room: room.to_owned(),
            reason,
        })
    }

    /// Sends JOIN_ROOM or LEAVE_ROOM for a checked room name.
    fn room_request(&self, kind: MessageType, room: &str) -> Result<(), ClientError> {
        let room = Client::room(room)?;
        self.json_frame(
            kind,
            &protocol::RoomRequest {
                room: room.into(),
                id: None,
            },
        )
    }

    /// Sends JOIN_ROOM; the answer arrives as [`Event::Joined`].
    pub fn join(&self, room: &str) -> Result<(), ClientError> {
        self.room_request(MessageType::JoinRoom, room)
    }

    /// Joins `room` and waits for the answer.
    pub fn join_and_wait(&self, room: &str, timeout: Duration) -> Result<RoomAck, ClientError> {
        self.join(room)?;
        let room = Client::room(room)?;
        self.wait_for(
            timeout,
            &format!("JOIN_ROOM answer for {room:?}"),
            |event| match event {
                Event::Joined(ack) if ack.room == room => Some(ack.clone()),
                _ => None,
            },
        )
    }

    /// Sends JOIN_ROOM asking for what the room has kept (SPEC.md 3.3):
    /// `Recovery::Since` the last message this client has (see
    /// [`Client::position`]), or the `Recovery::Last` n. The answer, then a
    /// [`Event::Gap`] for what is gone, then the kept messages, then the
    /// live ones arrive, with no gap and no duplicate between them.
    pub fn join_with(&self, room: &str, recovery: &Recovery) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Join<'a> {
            room: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<&'a Since>,
            #[serde(skip_serializing_if = "Option::is_none")]
            history: Option<u64>,
        }
        let room = Client::room(room)?;
        let (since, history) = match recovery {
            Recovery::Since(since) => (Some(since), None),
            Recovery::Last(n) => (None, Some(*n)),
        };
        self.json_frame(
            MessageType::JoinRoom,
            &Join {
                room,
                since,
                history,
            },
        )
    }

    /// The last place this client has seen in `room`'s order (from its
    /// JOIN answer, its messages, gaps and acks): what to pass as
    /// `Recovery::Since` when joining again after a reconnect. Messages
    /// count as seen when the reader thread reads them, before `recv`
    /// returns them.
    pub fn position(&self, room: &str) -> Option<Since> {
        lock(&self.shared.positions).get(room.trim()).cloned()
    }

    /// Asks who is in `room`; the answer arrives as [`Event::Who`]. A
    /// server older than protocol 0.4 closes the connection on it
    /// (`UNKNOWN_MESSAGE_TYPE`).
    pub fn who(&self, room: &str) -> Result<(), ClientError> {
        self.room_request(MessageType::Who, room)
    }

    /// Asks for one page of who is in `room`: at most `limit` members (1 to
    /// [`protocol::MAX_MEMBER_LIST`]; `None`: 100), those after the cursor
    /// `after` (a WHO answer's `next`; `None`: from the oldest). The answer
    /// arrives as [`Event::Who`]; its `next` is set when more follow.
    pub fn who_page(
        &self,
        room: &str,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Who<'a> {
            room: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<usize>,
        }
        let room = Client::room(room)?;
        self.json_frame(MessageType::Who, &Who { room, after, limit })
    }

    /// Lists every member of `room`, page by page, oldest first: each
    /// member there through the whole listing is in it exactly once (one
    /// that joins or leaves meanwhile may or may not be). Returns the
    /// member count of the last page's answer too. At most `max_pages`
    /// requests, so a room that keeps growing cannot keep it going forever.
    pub fn who_all(
        &self,
        room: &str,
        max_pages: usize,
        timeout: Duration,
    ) -> Result<(u64, Vec<Member>), ClientError> {
        let room = Client::room(room)?;
        let mut members = Vec::new();
        let mut after = None;
        for _ in 0..max_pages {
            self.who_page(room, after, None)?;
            let reply =
                self.wait_for(
                    timeout,
                    &format!("WHO answer for {room:?}"),
                    |event| match event {
                        Event::Who(reply) if reply.room == room => Some(reply.clone()),
                        _ => None,
                    },
                )?;
            members.extend(reply.member_list);
            match reply.next {
                Some(next) if Some(next) != after => after = Some(next),
                _ => return Ok((reply.members, members)),
            }
        }
        Err(ClientError::NotAvailable {
            what: "the whole member list",
            why: "the room still had more members after the pages allowed",
        })
    }

    /// Asks who is in `room` and waits for the answer.
    pub fn who_and_wait(&self, room: &str, timeout: Duration) -> Result<WhoReply, ClientError> {
        self.who(room)?;
        let room = Client::room(room)?;
        self.wait_for(
            timeout,
            &format!("WHO answer for {room:?}"),
            |event| match event {
                Event::Who(reply) if reply.room == room => Some(reply.clone()),
                _ => None,
            },
        )
    }

    /// Publishes `content` asking for an acknowledgement, which arrives as
    /// [`Event::Ack`] with `id`, the `seq` the message got and how many
    /// members it was queued for.
    pub fn send_acked<T: Serialize + ?Sized>(
        &self,
        room: &str,
        content: &T,
        id: RequestId,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Publish<'a, T: ?Sized> {
            room: &'a str,
            content: &'a T,
            id: RequestId,
            ack: bool,
        }
        let room = Client::room(room)?;
        let publish = Publish {
            room,
            content,
            id,
            ack: true,
        };
        self.json_frame(MessageType::Message, &publish)
    }

    /// Publishes `content` and waits for its acknowledgement.
    pub fn send_and_wait_ack<T: Serialize + ?Sized>(
        &self,
        room: &str,
        content: &T,
        timeout: Duration,
    ) -> Result<Ack, ClientError> {
        let id = RequestId::Number(self.next_seq.fetch_add(1, Ordering::Relaxed) as i64);
        self.send_acked(room, content, id.clone())?;
        self.wait_for(timeout, "the MESSAGE's ack", |event| match event {
            Event::Ack(ack) if ack.id == id => Some(ack.clone()),
            _ => None,
        })
    }

    /// Sends `content` to a user (all its connections) or one connection,
    /// not to a room. A recipient that is not connected is a non-fatal
    /// `NOT_FOUND` [`Event::Error`].
    pub fn send_direct<T: Serialize + ?Sized>(
        &self,
        to: &Recipient<'_>,
        content: &T,
    ) -> Result<(), ClientError> {
        self.direct(to, content, None)
    }

    /// [`Client::send_direct`] with a request `id`: a direct message is
    /// never acked (SPEC.md 3.16), so a sender of many tells which were
    /// refused by the `id` their ERRORs carry back.
    pub fn send_direct_with_id<T: Serialize + ?Sized>(
        &self,
        to: &Recipient<'_>,
        content: &T,
        id: &RequestId,
    ) -> Result<(), ClientError> {
        self.direct(to, content, Some(id))
    }

    fn direct<T: Serialize + ?Sized>(
        &self,
        to: &Recipient<'_>,
        content: &T,
        id: Option<&RequestId>,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Direct<'a, T: ?Sized> {
            #[serde(skip_serializing_if = "Option::is_none")]
            to_user: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            to_connection: Option<&'a str>,
            content: &'a T,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a RequestId>,
        }
        let (to_user, to_connection) = match to {
            Recipient::User(user) => (Some(&**user), None),
            Recipient::Connection(connection) => (None, Some(&**connection)),
        };
        let direct = Direct {
            to_user,
            to_connection,
            content,
            id,
        };
        self.json_frame(MessageType::Message, &direct)
    }

    /// Sends LEAVE_ROOM; the answer arrives as [`Event::Left`].
    pub fn leave(&self, room: &str) -> Result<(), ClientError> {
        self.room_request(MessageType::LeaveRoom, room)
    }

    /// Leaves `room` and waits for the answer.
    pub fn leave_and_wait(&self, room: &str, timeout: Duration) -> Result<RoomAck, ClientError> {
        self.leave(room)?;
        let room = Client::room(room)?;
        self.wait_for(
            timeout,
            &format!("LEAVE_ROOM answer for {room:?}"),
            |event| match event {
                Event::Left(ack) if ack.room == room => Some(ack.clone()),
                _ => None,
            },
        )
    }

    /// Publishes a text message (a JSON string) to `room`.
    pub fn send_text(&self, room: &str, text: &str) -> Result<(), ClientError> {
        self.send_json(room, text)
    }

    /// Publishes any serializable value as the message content.
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        room: &str,
        content: &T,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Publish<'a, T: ?Sized> {
            room: &'a str,
            content: &'a T,
        }
        let room = Client::room(room)?;
        self.json_frame(MessageType::Message, &Publish { room, content })
    }

    /// Publishes any serializable value with a request `id`: a refusal
    /// comes back as an ERROR carrying the same id ([`ServerError::id`]),
    /// so a publisher that sends many can tell which were refused. (An
    /// accepted MESSAGE has no answer; SPEC.md 3.0.)
    ///
    /// [`ServerError::id`]: crate::ServerError::id
    pub fn send_json_with_id<T: Serialize + ?Sized>(
        &self,
        room: &str,
        content: &T,
        id: &protocol::RequestId,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Publish<'a, T: ?Sized> {
            room: &'a str,
            content: &'a T,
            id: &'a protocol::RequestId,
        }
        let room = Client::room(room)?;
        self.json_frame(MessageType::Message, &Publish { room, content, id })
    }

    /// Publishes content given as JSON text, which is relayed byte-exact.
    pub fn send_raw_json(&self, room: &str, content: &RawValue) -> Result<(), ClientError> {
        self.send_json(room, content)
    }

    /// Publishes raw bytes (a BINARY MESSAGE), relayed byte-exact.
    pub fn send_binary(&self, room: &str, body: &[u8]) -> Result<(), ClientError> {
        let room = Client::room(room)?;
        self.send_with(|buf| {
            let start = begin_frame(buf, MessageType::Message, Flags::BINARY);
            if let Err(error) = (BinaryPublish { room, body }).encode(buf) {
                abort_frame(buf, start);
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    error,
                )));
            }
            end_frame(buf, start)
                .map(drop)
                .map_err(|error| self.encode_error(error))
        })
    }

    /// Sends a HEARTBEAT and returns its sequence number; the answer arrives
    /// as [`Event::Heartbeat`] with that number and the round-trip time.
    pub fn heartbeat(&self) -> Result<u64, ClientError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let sent_us = u64::try_from(self.shared.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let payload = reader::heartbeat_payload(seq, sent_us);
        self.send_with(|buf| {
            protocol::encode(buf, MessageType::Heartbeat, Flags::JSON, payload.as_bytes())
                .map_err(|error| self.encode_error(error))
        })?;
        Ok(seq)
    }

    /// Sends a HEARTBEAT and waits for its answer; returns the round-trip time.
    ///
    /// Since the server answers in request order, the answer also proves that
    /// every earlier request has been handled.
    ///
    /// A server that announced no `idleTimeoutMs` (see
    /// [`Client::server_echoes_heartbeats`]) is asked with a HELLO right
    /// after the HEARTBEAT: every server answers HELLO, in order, so a HELLO
    /// answer that arrives without the echo before it shows that no echo is
    /// coming, and the call fails at once with [`ClientError::NotAvailable`]
    /// instead of waiting out `timeout`. That is the case with the original
    /// Node.js server.
    pub fn heartbeat_and_wait(&self, timeout: Duration) -> Result<Duration, ClientError> {
        let sent = Instant::now();
        let seq = self.heartbeat()?;
        let rtt = |reply: &HeartbeatReply| reply.rtt.unwrap_or_else(|| sent.elapsed());
        if self.server_echoes_heartbeats() != Some(false) {
            return self.wait_for(timeout, "HEARTBEAT answer", |event| match event {
                Event::Heartbeat(reply) if reply.seq == Some(seq) => Some(rtt(reply)),
                _ => None,
            });
        }
        self.send_hello(&Hello::default())?;
        let deadline = sent + timeout;
        let echo = self.wait_for(timeout, "HEARTBEAT or HELLO answer", |event| match event {
            Event::Heartbeat(reply) if reply.seq == Some(seq) => Some(Some(rtt(reply))),
            Event::Hello(_) => Some(None),
            _ => None,
        })?;
        let Some(rtt) = echo else {
            return Err(ClientError::NotAvailable {
                what: "the heartbeat round-trip time",
                why: "it does not answer HEARTBEAT (the original Node.js server never does)",
            });
        };
        // It echoed after all; its HELLO answer is right behind. Take that
        // too, so it does not show up as an event nobody asked for.
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_for(left, "HELLO answer", |event| {
            matches!(event, Event::Hello(_)).then_some(())
        })?;
        Ok(rtt)
    }

    /// Writes `bytes` to the socket as they are: no framing, no checks.
    ///
    /// For tests and stress tools that send partial, split or malformed frames.
    pub fn send_raw_bytes(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut writer = lock(&self.writer);
        writer
            .stream
            .write_all(bytes)
            .map_err(|error| self.write_error(error))
    }

    // ---- receiving -----------------------------------------------------

    /// The next event, blocking; `None` once [`Event::Disconnected`] has been
    /// returned.
    pub fn recv(&self) -> Option<Event> {
        if let Some(event) = lock(&self.pending).pop_front() {
            return Some(event);
        }
        self.events.recv().ok()
    }

    /// The next event, waiting at most `timeout`.
    ///
    /// Fails with [`ClientError::Timeout`] when nothing arrives in time, and
    /// with [`ClientError::Disconnected`] after the last event was returned.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, ClientError> {
        if let Some(event) = lock(&self.pending).pop_front() {
            return Ok(event);
        }
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
                waiting_for: "event".into(),
                after: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Option<Event> {
        if let Some(event) = lock(&self.pending).pop_front() {
            return Some(event);
        }
        self.events.try_recv().ok()
    }

    fn gone(&self) -> ClientError {
        ClientError::Disconnected(self.shared.reason().unwrap_or(DisconnectReason::Closed))
    }

    /// Reads events until `pick` returns `Some` for one, and returns that.
    ///
    /// Events `pick` passes over are kept for the next `recv`. An ERROR that
    /// `pick` does not take ends the wait with [`ClientError::Server`]: the
    /// server answers in request order, so it belongs to the awaited request
    /// or to an earlier one nobody waited for. The end of the connection ends
    /// it with [`ClientError::Disconnected`], and the deadline with
    /// [`ClientError::Timeout`] naming `waiting_for`.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        waiting_for: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut pending = lock(&self.pending);
        for index in 0..pending.len() {
            if let Some(found) = pick(&pending[index]) {
                pending.remove(index);
                return Ok(found);
            }
        }
        if let Some(Event::Disconnected(reason)) = pending.back() {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ClientError::Timeout {
                        waiting_for: waiting_for.to_owned(),
                        after: timeout,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
            };
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
            match event {
                Event::Error(error) => return Err(ClientError::Server(error)),
                Event::Disconnected(reason) => {
                    pending.push_back(Event::Disconnected(reason.clone()));
                    return Err(ClientError::Disconnected(reason));
                }
                other => pending.push_back(other),
            }
        }
    }

    // ---- closing -------------------------------------------------------

    /// Shuts the connection down in both directions. Events already read stay
    /// readable; the last one is [`Event::Disconnected`] with
    /// [`DisconnectReason::Closed`] (unless the server had closed it first).
    pub fn shutdown(&self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.control.shutdown(Shutdown::Both);
    }

    /// Shuts the connection down and waits for the reader thread to end.
    pub fn close(mut self) {
        self.shutdown();
        // The reader may be blocked handing over an event: drain so it can end.
        while self.events.recv().is_ok() {}
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The reader thread sees the socket close (or the channel's receiver
        // gone) and ends on its own.
        self.shutdown();
    }
}
