//! Minimal WebSocket (RFC 6455) pieces shared by the load generator and the echo upstream:
//! the handshake key digest, frame encoding and a buffered frame reader. Only what the
//! benchmark needs: binary/text frames up to 64 KiB, no fragmentation, no extensions.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(WS_GUID.as_bytes());
    base64(&sha1(&input))
}

/// SHA-1 (only for the handshake digest, which RFC 6455 defines with it).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends one unfragmented frame (FIN set) with `opcode` to `out`, masked with `mask` when
/// given (client to server).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | (opcode & 0x0f));
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mbit | len as u8);
    } else if len <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// One decoded frame: opcode and (unmasked) payload.
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Tries to decode one frame at the start of `buf`; returns it and the bytes it used.
pub fn decode_frame(buf: &[u8]) -> anyhow::Result<Option<(Frame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut pos = 2;
    let len = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            pos = 4;
            usize::from(u16::from_be_bytes([buf[2], buf[3]]))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            pos = 10;
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            usize::try_from(u64::from_be_bytes(b))?
        }
        n => usize::from(n),
    };
    anyhow::ensure!(
        len <= 1 << 20,
        "frame of {len} bytes: too large for the benchmark"
    );
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < pos + len {
        return Ok(None);
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some((Frame { opcode, payload }, pos + len)))
}

/// A read buffer over a stream: HTTP head, then frames.
pub struct Reader<R> {
    pub rd: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(rd: R) -> Self {
        Reader {
            rd,
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 8192 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 4096, 0);
        let n = self.rd.read(&mut self.buf[old..]).await?;
        self.buf.truncate(old + n);
        anyhow::ensure!(n > 0, "connection closed");
        Ok(())
    }

    /// The HTTP head (up to and without the blank line).
    pub async fn read_head(&mut self) -> anyhow::Result<String> {
        loop {
            let data = &self.buf[self.start..];
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..i]).into_owned();
                self.start += i + 4;
                return Ok(head);
            }
            anyhow::ensure!(data.len() < 64 * 1024, "HTTP head too large");
            self.fill().await?;
        }
    }

    /// Next frame.
    pub async fn read_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some((f, used)) = decode_frame(&self.buf[self.start..])? {
                self.start += used;
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Every complete frame already received, reading once if there is none.
    pub async fn read_frames(&mut self, out: &mut Vec<Frame>) -> anyhow::Result<()> {
        loop {
            while let Some((f, used)) = decode_frame(&self.buf[self.start..])? {
                self.start += used;
                out.push(f);
            }
            if !out.is_empty() {
                return Ok(());
            }
            self.fill().await?;
        }
    }
}

/// The status code of an HTTP response head.
pub fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) and RSS of a process, from `/proc/{pid}/stat` and `status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_kb: u64,
}

/// `pid` `None` = this process.
pub fn proc_sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: field 3 (state) is f[0]; utime (14) is f[11], stime (15) f[12].
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture we run on.
    let cpu = Duration::from_millis(ticks * 10);
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample { cpu, rss_kb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frame_roundtrip_masked() {
        let mut buf = Vec::new();
        let payload = vec![7u8; 300];
        encode_frame(&mut buf, 2, &payload, Some([1, 2, 3, 4]));
        let Ok(Some((f, used))) = decode_frame(&buf) else {
            unreachable!("a whole frame decodes")
        };
        assert_eq!(used, buf.len());
        assert_eq!(f.opcode, 2);
        assert_eq!(f.payload, payload);
        assert!(matches!(decode_frame(&buf[..buf.len() - 1]), Ok(None)));
    }
}
