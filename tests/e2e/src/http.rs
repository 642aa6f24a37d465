//! HTTP and WebSocket over raw sockets (what a client sends, nothing added), and seats
//! reserved through the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 request with `Connection: close`; returns (status, raw headers, body).
/// `addr` is `ip:port`, or `unix:PATH` for a Unix socket (Envoy's admin).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    http_request_within(Duration::from_secs(10), addr, method, path, headers)
}

/// [`http_request`] with a read timeout.
pub fn http_request_within(
    timeout: Duration,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let (mut stream, host): (Box<dyn ReadWrite>, &str) = match addr.strip_prefix("unix:") {
        Some(path) => {
            let s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            (Box::new(s), "localhost")
        }
        None => {
            let s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(timeout))?;
            (Box::new(s), addr)
        }
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// A TCP or Unix stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    http_request(addr, "GET", path, &[])
}

/// Sends a WebSocket upgrade for `path` and returns the response status: 101 means Envoy
/// routed it to a live upstream that accepted the upgrade.
pub fn ws_handshake(addr: &str, path: &str) -> std::io::Result<u16> {
    ws_handshake_with(addr, path, &[])
}

/// [`ws_handshake`] with extra request headers.
pub fn ws_handshake_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(req.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// A seat reserved through the proxy: `POST /matchmake/joinOrCreate/{room}`.
#[derive(Debug, Clone)]
pub struct Seat {
    pub room_id: String,
    pub process_id: String,
    pub session_id: String,
}

pub fn reserve_seat(addr: &str, room: &str) -> Seat {
    matchmake(addr, "joinOrCreate", room)
}

/// A seat from `POST /matchmake/{method}/{room}` (`create`: always a new room).
pub fn matchmake(addr: &str, method: &str, room: &str) -> Seat {
    let (status, _, body) =
        http_request(addr, "POST", &format!("/matchmake/{method}/{room}"), &[]).unwrap();
    assert_eq!(status, 200, "matchmake: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    Seat {
        room_id: v["room"]["roomId"].as_str().unwrap().to_owned(),
        process_id: v["room"]["processId"].as_str().unwrap().to_owned(),
        session_id: v["sessionId"].as_str().unwrap().to_owned(),
    }
}

/// A WebSocket upgrade, then the first frame from the server: (status, opcode, first
/// payload byte). Colyseus's first message on a seat it accepts is `JOIN_ROOM` (10); on a
/// seat it does not hold, `ERROR` (11) and a close.
pub fn ws_first_frame(addr: &str, path: &str) -> (u16, Option<u8>, Option<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    if status != 101 {
        return (status, None, None);
    }
    let mut head = [0u8; 2];
    if reader.read_exact(&mut head).is_err() {
        return (status, None, None);
    }
    let opcode = head[0] & 0x0f;
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            reader.read_exact(&mut ext).unwrap();
            usize::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            reader.read_exact(&mut ext).unwrap();
            usize::try_from(u64::from_be_bytes(ext)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).unwrap();
    (status, Some(opcode), payload.first().copied())
}
