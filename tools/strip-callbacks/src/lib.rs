//! Removes exports from a WebAssembly module; used on the filter's `.wasm` by
//! `scripts/build-filter.sh`.
//!
//! # Why
//! The proxy-wasm Rust SDK exports every callback of the ABI (`proxy_on_request_body`,
//! `proxy_on_response_body`, ...) whether the filter implements it or not; the default
//! implementations do nothing. Envoy's proxy-wasm host (`proxy-wasm-cpp-host`,
//! `src/context.cc`) calls into the VM for a callback only when the module exports it:
//! `if (!wasm_->on_request_body_) return FilterDataStatus::Continue;`. With the SDK's exports,
//! every chunk of an upgraded WebSocket stream, in both directions, costs a call into V8 and
//! a context lookup in the SDK's dispatcher, only to return `Continue`. Without the export
//! the host returns `Continue` itself.
//!
//! Removing an export changes nothing else in the module: exports are not referenced by
//! index from any other section. The function bodies stay (dead code).
//!
//! # Format
//! A module is the 8-byte preamble (`\0asm`, version 1), then sections: an id byte, the
//! content size (unsigned LEB128) and the content. The export section (id 7) is a vector:
//! a count, then per export its name (length + UTF-8 bytes), a kind byte and an index.

use std::fmt;

/// Callbacks the filter leaves at the SDK's default, so their exports can go.
///
/// Each is a host callback the SDK exports for every module and whose default does what the
/// host does when the export is missing: `Continue` for headers, body and trailers, nothing
/// for `proxy_on_log`, `true` for `proxy_on_done`. An HTTP filter never receives the
/// network, queue, foreign-function or gRPC callbacks it does not ask for; the network
/// filter (TCP edge) gets the network ones, and its unused ones are listed here too. If the filter ever implements one of these (`on_http_request_body`, `on_log`,
/// ...), it must leave this list: `colyseus-envoy-filter`'s test
/// `stripped_callbacks_are_sdk_defaults` lists the same names.
///
/// - `proxy_on_request_body`, `proxy_on_response_body`: called for every chunk of every
///   stream, i.e. every WebSocket frame (or batch of frames) in each direction.
/// - `proxy_on_response_headers`, `proxy_on_log`, `proxy_on_done`: once per stream each;
///   three calls into the VM per connection set up.
/// - `proxy_on_request_trailers`, `proxy_on_response_trailers`: the same no-op, for
///   completeness (WebSockets have no trailers).
/// - `proxy_on_upstream_data`, `proxy_on_upstream_connection_close`: the network filter
///   (TCP edge) reads only the client's side; the first is called for every chunk a game
///   process sends on a raw connection.
///
/// `proxy_on_delete` stays: the SDK frees the stream's context there.
pub const UNUSED_CALLBACKS: &[&str] = &[
    "proxy_on_request_body",
    "proxy_on_response_body",
    "proxy_on_response_headers",
    "proxy_on_request_trailers",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
];

/// Callbacks the filter needs; the module is refused if removing would take one away, or
/// if one is missing (then the input is not the filter).
pub const REQUIRED: &[&str] = &[
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_delete",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
];

const PREAMBLE: [u8; 8] = *b"\0asm\x01\0\0\0";
const EXPORT_SECTION: u8 = 7;

/// Why a module could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    NotWasm,
    Truncated,
    BadLeb,
    BadName,
    MissingExport(String),
    Required(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWasm => write!(f, "not a WebAssembly 1.0 binary module"),
            Self::Truncated => write!(f, "module is truncated"),
            Self::BadLeb => write!(f, "malformed LEB128 integer"),
            Self::BadName => write!(f, "export name is not UTF-8"),
            Self::MissingExport(name) => write!(f, "module does not export {name}"),
            Self::Required(name) => write!(f, "refusing to remove required export {name}"),
        }
    }
}

impl std::error::Error for Error {}

/// One export, as found in the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub name: String,
    pub kind: u8,
    pub index: u32,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| Error::BadLeb);
            }
        }
        Err(Error::BadLeb)
    }

    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn put_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The module's sections as (id, content), after checking the preamble.
fn sections(module: &[u8]) -> Result<Vec<(u8, &[u8])>, Error> {
    if module.get(..8) != Some(&PREAMBLE[..]) {
        return Err(Error::NotWasm);
    }
    let mut c = Cursor {
        bytes: module,
        pos: 8,
    };
    let mut out = Vec::new();
    while !c.done() {
        let id = c.byte()?;
        let size = c.u32()? as usize;
        out.push((id, c.take(size)?));
    }
    Ok(out)
}

fn parse_exports(content: &[u8]) -> Result<Vec<Export>, Error> {
    let mut c = Cursor {
        bytes: content,
        pos: 0,
    };
    let count = c.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = c.u32()? as usize;
        let name = std::str::from_utf8(c.take(len)?).map_err(|_| Error::BadName)?;
        let kind = c.byte()?;
        let index = c.u32()?;
        out.push(Export {
            name: name.to_owned(),
            kind,
            index,
        });
    }
    if !c.done() {
        return Err(Error::Truncated);
    }
    Ok(out)
}

/// Every export of the module.
///
/// # Errors
/// The bytes are not a well-formed module (as far as sections and exports go).
pub fn exports(module: &[u8]) -> Result<Vec<Export>, Error> {
    let mut all = Vec::new();
    for (id, content) in sections(module)? {
        if id == EXPORT_SECTION {
            all.extend(parse_exports(content)?);
        }
    }
    Ok(all)
}

/// The module without the exports named in `remove` (names it does not export are
/// ignored, so a stripped module strips to itself), and the names actually removed.
///
/// # Errors
/// A malformed module, a name in [`REQUIRED`] in `remove`, or a [`REQUIRED`] export missing
/// from the module.
pub fn remove_exports(module: &[u8], remove: &[&str]) -> Result<(Vec<u8>, Vec<String>), Error> {
    if let Some(name) = remove.iter().find(|n| REQUIRED.contains(n)) {
        return Err(Error::Required((*name).to_owned()));
    }
    let present = exports(module)?;
    if let Some(name) = REQUIRED
        .iter()
        .find(|r| !present.iter().any(|e| e.name == **r))
    {
        return Err(Error::MissingExport((*name).to_owned()));
    }
    let mut out = Vec::with_capacity(module.len());
    out.extend_from_slice(&PREAMBLE);
    let mut removed = Vec::new();
    for (id, content) in sections(module)? {
        let content = if id == EXPORT_SECTION {
            let (kept, gone): (Vec<Export>, Vec<Export>) = parse_exports(content)?
                .into_iter()
                .partition(|e| !remove.contains(&e.name.as_str()));
            removed.extend(gone.into_iter().map(|e| e.name));
            let mut body = Vec::with_capacity(content.len());
            put_u32(
                &mut body,
                u32::try_from(kept.len()).map_err(|_| Error::BadLeb)?,
            );
            for e in &kept {
                put_u32(
                    &mut body,
                    u32::try_from(e.name.len()).map_err(|_| Error::BadLeb)?,
                );
                body.extend_from_slice(e.name.as_bytes());
                body.push(e.kind);
                put_u32(&mut body, e.index);
            }
            body
        } else {
            content.to_vec()
        };
        out.push(id);
        put_u32(
            &mut out,
            u32::try_from(content.len()).map_err(|_| Error::BadLeb)?,
        );
        out.extend_from_slice(&content);
    }
    Ok((out, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export_section(names: &[&str]) -> Vec<u8> {
        let mut body = Vec::new();
        put_u32(&mut body, names.len() as u32);
        for (i, n) in names.iter().enumerate() {
            put_u32(&mut body, n.len() as u32);
            body.extend_from_slice(n.as_bytes());
            body.push(0);
            put_u32(&mut body, 200 + i as u32); // two-byte LEB
        }
        body
    }

    /// A module with a custom section before and after the export section.
    fn module(names: &[&str]) -> Vec<u8> {
        let mut m = PREAMBLE.to_vec();
        m.extend_from_slice(&[0, 3, 1, b'x', 9]);
        let exports = export_section(names);
        m.push(EXPORT_SECTION);
        put_u32(&mut m, exports.len() as u32);
        m.extend_from_slice(&exports);
        let big = vec![7u8; 300]; // size needs a two-byte LEB
        m.push(0);
        put_u32(&mut m, big.len() as u32 + 2);
        m.extend_from_slice(&[1, b'y']);
        m.extend_from_slice(&big);
        m
    }

    fn filter_like(extra: &[&'static str]) -> Vec<&'static str> {
        // Removed exports last, so the kept ones keep their positions (and test indices).
        let mut names = REQUIRED.to_vec();
        names.push("memory");
        names.extend_from_slice(extra);
        names
    }

    #[test]
    fn removes_only_the_named_exports_and_keeps_other_sections() {
        let names = filter_like(&["proxy_on_request_body", "proxy_on_log"]);
        let m = module(&names);
        let (out, removed) = remove_exports(&m, UNUSED_CALLBACKS).unwrap();
        assert_eq!(removed, ["proxy_on_request_body", "proxy_on_log"]);
        let kept = filter_like(&[]);
        assert_eq!(out, module(&kept));
        let left = exports(&out).unwrap();
        assert_eq!(
            left.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            kept
        );
        assert_eq!(left[0].index, 200);
        // Idempotent.
        let (again, removed) = remove_exports(&out, UNUSED_CALLBACKS).unwrap();
        assert_eq!(again, out);
        assert!(removed.is_empty());
    }

    #[test]
    fn refuses_to_break_the_filter() {
        let m = module(&filter_like(&[]));
        assert_eq!(
            remove_exports(&m, &["proxy_on_delete"]),
            Err(Error::Required("proxy_on_delete".into()))
        );
        let m = module(&["proxy_on_request_body"]);
        assert!(matches!(
            remove_exports(&m, UNUSED_CALLBACKS),
            Err(Error::MissingExport(_))
        ));
        for list in [UNUSED_CALLBACKS, REQUIRED] {
            for name in list {
                assert!(name.starts_with("proxy_on_"), "{name}");
            }
        }
        assert!(!UNUSED_CALLBACKS.iter().any(|n| REQUIRED.contains(n)));
    }

    #[test]
    fn refuses_malformed_modules() {
        assert_eq!(exports(b"\0asm\x02\0\0\0"), Err(Error::NotWasm));
        assert_eq!(exports(b"\0as"), Err(Error::NotWasm));
        let mut m = module(&filter_like(&[]));
        m.pop();
        assert_eq!(exports(&m), Err(Error::Truncated));
        let mut m = PREAMBLE.to_vec();
        m.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(exports(&m), Err(Error::BadLeb));
    }
}
