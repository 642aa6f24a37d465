//! Test TLS certificates and fingerprints (openssl).

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl args` in `dir`, asserting it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as `{name}.pem` and
/// `{name}.key` in `dir`.
pub fn make_cert(dir: &Path, name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let san = ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"];
    self_signed(dir, "/CN=localhost", &san, &key, &pem);
}

/// `openssl req -x509`: a new RSA key and a certificate for `subject` signed by itself.
fn self_signed(dir: &Path, subject: &str, extra: &[&str], key: &str, pem: &str) {
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ];
    args.extend_from_slice(&["-subj", subject]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-keyout", key, "-out", pem]);
    openssl(dir, &args);
}

/// SHA-256 fingerprint of the certificate a new TLS connection is served.
pub fn served_fingerprint(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn file_fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A CA and a server certificate it signed for 127.0.0.1/localhost (a self-signed server
/// certificate is refused by rustls as a CA used as an end entity): `ca.pem`,
/// `{name}.pem`, `{name}.key` in `dir`.
pub fn make_ca_and_cert(dir: &Path, name: &str) {
    self_signed(dir, "/CN=test CA", &[], "ca.key", "ca.pem");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &pem,
        ],
    );
}
