//! `run`'s control socket (`$RUN_DIR/run.sock`, mode 0600): `run hot-restart [--force]`
//! sends one line and gets the outcome back in one line, `ok: ...` or `refused: ...`.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A hot restart asked for, and where its outcome goes.
pub struct Request {
    pub force: bool,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Binds the socket (only its owner may connect) and forwards requests to `requests`.
///
/// # Errors
/// Binding or restricting the socket failed.
pub fn serve(path: &Path, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, requests.clone()));
        }
    });
    Ok(())
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Request>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let outcome = match line.trim() {
        "hot-restart" | "hot-restart --force" => {
            let (reply, answer) = oneshot::channel();
            let force = line.contains("--force");
            if requests.send(Request { force, reply }).await.is_err() {
                Err("run is stopping".to_owned())
            } else {
                answer
                    .await
                    .unwrap_or_else(|_| Err("run is stopping".to_owned()))
            }
        }
        other => Err(format!("unknown request {other:?}")),
    };
    let text = match outcome {
        Ok(s) => format!("ok: {s}\n"),
        Err(s) => format!("refused: {s}\n"),
    };
    let _ = write.write_all(text.as_bytes()).await;
}

/// `run hot-restart`: asks the `run` listening on `path` and returns its answer.
///
/// # Errors
/// No `run` answers there, or it refused (the answer is the error).
pub async fn request_hot_restart(path: &Path, force: bool) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "no `run` answers on {} ({e}); is RUN_DIR the one it was started with?",
            path.display()
        )
    })?;
    let line = if force {
        "hot-restart --force\n"
    } else {
        "hot-restart\n"
    };
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    match answer.trim().split_once(": ") {
        Some(("ok", rest)) => Ok(rest.to_owned()),
        Some((_, rest)) => Err(rest.to_owned()),
        None => Err(format!("unexpected answer {answer:?}")),
    }
}
