//! `bench-echo --port P`: the upstream the benchmark loads. Answers a WebSocket upgrade on
//! any path (e.g. `/{processId}/{roomId}?sessionId=...`) and echoes every data frame back;
//! any other request gets `200 ok`. One thread, like a Node game server. With `--tag T`
//! every response carries `x-bench-echo: T`, so `loadgen converge` can tell this upstream's
//! answer from another's (@colyseus/proxy sends an unknown processId to any process).

use std::net::SocketAddr;

use clap::Parser;
use colyseus_envoy_bench::{accept_key, encode_frame, Frame, Reader};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// Listening port on `--ip`.
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Value of the `x-bench-echo` header on every response (none when unset).
    #[arg(long)]
    tag: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", args.ip, args.port).parse()?;
        let listener = TcpListener::bind(addr).await?;
        // Built once and kept for the life of the process, so every connection can borrow it.
        let tag_header: &'static str = match &args.tag {
            Some(t) => Box::leak(format!("x-bench-echo: {t}\r\n").into_boxed_str()),
            None => "",
        };
        println!("READY {addr}");
        loop {
            let (sock, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = serve(sock, tag_header).await;
            });
        }
    })
}

async fn serve(sock: TcpStream, tag_header: &str) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut rd = Reader::new(rd);
    let head = rd.read_head().await?;
    let key = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_owned())
    });
    let Some(key) = key else {
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n{tag_header}\r\nok\n"
        );
        wr.write_all(resp.as_bytes()).await?;
        return Ok(());
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{tag_header}\r\n",
        accept_key(&key)
    );
    wr.write_all(resp.as_bytes()).await?;
    let mut frames: Vec<Frame> = Vec::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        frames.clear();
        rd.read_frames(&mut frames).await?;
        out.clear();
        let mut close = false;
        for f in &frames {
            match f.opcode {
                0x8 => {
                    encode_frame(&mut out, 0x8, &f.payload, None);
                    close = true;
                    break;
                }
                0x9 => encode_frame(&mut out, 0xA, &f.payload, None),
                0xA => {}
                op => encode_frame(&mut out, op, &f.payload, None),
            }
        }
        wr.write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
}
