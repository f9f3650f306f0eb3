//! Herald's WebSocket codec against an independent implementation: a tokio-tungstenite client talks
//! to a tiny echo server, built on `herald_server::ws` alone, over a real TCP socket.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use herald_server::ws::{self, FrameReader, Incoming, ReadConfig, WsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How the echo server's connection ended.
#[derive(Debug)]
struct Ended {
    /// The close frame's code and reason, or the error that ended the connection.
    result: Result<Option<(u16, String)>, WsError>,
    /// The reader's buffered bytes at the end.
    buffer_capacity: usize,
}

/// Starts an echo server for one connection on 127.0.0.1:0.
async fn start_echo(max_message: usize) -> (SocketAddr, JoinHandle<Ended>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ReadConfig {
        initial_buffer: 4096,
        max_message,
    };
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        echo(stream, cfg).await
    });
    (addr, task)
}

/// Upgrades the connection, then echoes messages, answers pings and closes as RFC 6455 asks.
async fn echo(mut stream: TcpStream, cfg: ReadConfig) -> Ended {
    let mut reader = FrameReader::new(cfg);
    let early = handshake(&mut stream).await;
    reader.feed(&early);
    let result = loop {
        let incoming = match reader.read(&mut stream).await {
            Ok(incoming) => incoming,
            Err(e) => {
                if let Some(code) = e.close_code() {
                    let _ = stream
                        .write_all(&ws::close_frame(code, &e.to_string()))
                        .await;
                    linger(stream).await;
                }
                break Err(e);
            }
        };
        match incoming {
            Incoming::Text(payload) => write_frame(&mut stream, ws::OP_TEXT, payload).await,
            Incoming::Binary(payload) => write_frame(&mut stream, ws::OP_BINARY, payload).await,
            Incoming::Ping(payload) => {
                stream.write_all(&ws::pong_frame(&payload)).await.unwrap();
            }
            Incoming::Pong(_) => {}
            Incoming::Close(close) => {
                let code = close.as_ref().map_or(ws::NORMAL, |(code, _)| *code);
                stream.write_all(&ws::close_frame(code, "")).await.unwrap();
                linger(stream).await;
                break Ok(close);
            }
        }
    };
    Ended {
        result,
        buffer_capacity: reader.buffer_capacity(),
    }
}

/// Reads the upgrade request up to its blank line, answers 101, and returns any bytes the client
/// sent after the request.
async fn handshake(stream: &mut TcpStream) -> Bytes {
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "client left during the handshake");
    };
    let request = std::str::from_utf8(&buf[..end]).unwrap();
    let key = request
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim())
        .expect("the request has a Sec-WebSocket-Key");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(key)
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    buf.split_off(end).freeze()
}

/// Writes a frame the way the gateway does: a small header, then the shared payload by reference,
/// in one vectored write.
async fn write_frame(stream: &mut TcpStream, opcode: u8, payload: Bytes) {
    let mut header = BytesMut::with_capacity(10);
    ws::encode_header(opcode, payload.len(), &mut header);
    let mut frame = header.freeze().chain(payload);
    stream.write_all_buf(&mut frame).await.unwrap();
}

/// Ends the connection after our close frame: stop writing, then read until the client closes.
/// Closing a socket with unread data in it sends a reset, which can destroy the close frame in
/// flight before the client reads it.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut discard = [0; 4096];
    let drained = async { while matches!(stream.read(&mut discard).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(10), drained).await;
}

async fn connect(addr: SocketAddr) -> Client {
    let (client, response) = connect_async(format!("ws://{addr}/")).await.unwrap();
    // tungstenite has also checked Sec-WebSocket-Accept, i.e. `accept_key`.
    assert_eq!(response.status().as_u16(), 101);
    client
}

/// The client's next message; `None` once the connection has ended.
async fn next(client: &mut Client) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("the server answers within 10 s")
        .map(|m| m.unwrap())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn echoes_messages_answers_pings_and_closes_cleanly() {
    let (addr, server) = start_echo(1 << 20).await;
    let mut client = connect(addr).await;

    client.send(Message::text("héllo")).await.unwrap();
    assert_eq!(next(&mut client).await, Some(Message::text("héllo")));

    client
        .send(Message::binary(vec![0, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut client).await,
        Some(Message::binary(vec![0, 1, 2, 255]))
    );

    let big = pattern(100 << 10);
    client.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut client).await, Some(Message::binary(big)));

    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut client).await,
        Some(Message::Pong(Bytes::from_static(b"are you there")))
    );

    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    match next(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    assert_eq!(
        next(&mut client).await,
        None,
        "the server ended the TCP connection"
    );
    drop(client);

    let ended = server.await.unwrap();
    assert_eq!(ended.result.unwrap(), Some((1000, "bye".to_owned())));
    assert_eq!(
        ended.buffer_capacity, 4096,
        "the 100 KiB message left no large buffer"
    );
}

#[tokio::test]
async fn fragmented_message_is_reassembled_around_a_ping() {
    let (addr, server) = start_echo(1 << 20).await;
    let mut client = connect(addr).await;

    let text = OpCode::Data(Data::Text);
    let continuation = OpCode::Data(Data::Continue);
    for frame in [
        Frame::message(Bytes::from_static(b"Hel"), text, false),
        Frame::ping(Bytes::from_static(b"between")),
        Frame::message(Bytes::from_static(b"lo, "), continuation, false),
        Frame::message(Bytes::from("wörld"), continuation, true),
    ] {
        client.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(
        next(&mut client).await,
        Some(Message::Pong(Bytes::from_static(b"between")))
    );
    assert_eq!(next(&mut client).await, Some(Message::text("Hello, wörld")));

    client.close(None).await.unwrap();
    assert!(matches!(next(&mut client).await, Some(Message::Close(_))));
    assert_eq!(next(&mut client).await, None);
    drop(client);
    assert_eq!(server.await.unwrap().result.unwrap(), None);
}

#[tokio::test]
async fn message_over_the_limit_is_closed_with_1009() {
    let (addr, server) = start_echo(16 << 10).await;
    let mut client = connect(addr).await;

    let at_limit = pattern(16 << 10);
    client
        .send(Message::binary(at_limit.clone()))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await, Some(Message::binary(at_limit)));

    client
        .send(Message::binary(pattern((16 << 10) + 1)))
        .await
        .unwrap();
    match next(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(next(&mut client).await, None);
    drop(client);

    let ended = server.await.unwrap();
    assert!(matches!(ended.result, Err(WsError::TooBig)), "{ended:?}");
    assert_eq!(
        ended.buffer_capacity, 4096,
        "the oversized payload was never buffered"
    );
}

/// An idle connection holds no read buffer: it is dropped while waiting and taken again when
/// bytes arrive.
#[tokio::test]
async fn an_idle_tcp_reader_holds_no_buffer() {
    use herald_server::ws::{FrameReader, Incoming, ReadConfig};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (mut rd, _wr) = server.into_split();
    let mut reader = FrameReader::new(ReadConfig::default());
    let mask = [7u8, 1, 2, 3];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    for _ in 0..3 {
        client.write_all(&frame).await.unwrap();
        let got = reader.read_tcp(&mut rd).await.unwrap();
        assert_eq!(got, Incoming::Text(bytes::Bytes::from_static(b"hello")));
        drop(got);
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read_tcp(&mut rd),
        )
        .await;
        assert!(waited.is_err(), "nothing more was sent");
        assert_eq!(reader.buffer_capacity(), 0);
    }
    // A frame split across two writes is kept while incomplete.
    client.write_all(&frame[..4]).await.unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        reader.read_tcp(&mut rd),
    )
    .await;
    assert!(waited.is_err());
    assert!(reader.buffer_capacity() > 0);
    client.write_all(&frame[4..]).await.unwrap();
    assert_eq!(
        reader.read_tcp(&mut rd).await.unwrap(),
        Incoming::Text(bytes::Bytes::from_static(b"hello"))
    );
}
