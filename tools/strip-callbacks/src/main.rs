//! `strip-callbacks FILE.wasm`: removes [`strip_callbacks::UNUSED_CALLBACKS`] from the
//! module's exports, in place (written to a temporary file next to it, then renamed).
//! `strip-callbacks --list FILE.wasm` prints the module's exports.

use std::process::ExitCode;

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [flag, path] if flag == "--list" => {
            let module = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
            for e in strip_callbacks::exports(&module).map_err(|e| format!("{path}: {e}"))? {
                println!("{} kind={} index={}", e.name, e.kind, e.index);
            }
            Ok(())
        }
        [path] => {
            let module = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
            let (out, removed) =
                strip_callbacks::remove_exports(&module, strip_callbacks::UNUSED_CALLBACKS)
                    .map_err(|e| format!("{path}: {e}"))?;
            if removed.is_empty() {
                eprintln!("strip-callbacks: {path}: nothing to remove");
                return Ok(());
            }
            let tmp = format!("{path}.strip-tmp");
            std::fs::write(&tmp, &out).map_err(|e| format!("writing {tmp}: {e}"))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("renaming {tmp}: {e}"))?;
            eprintln!("strip-callbacks: {path}: removed {}", removed.join(", "));
            Ok(())
        }
        _ => Err("usage: strip-callbacks [--list] FILE.wasm".to_owned()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strip-callbacks: {e}");
            ExitCode::FAILURE
        }
    }
}
