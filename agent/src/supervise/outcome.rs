//! How `run` ends: one line for the operator and an exit code per kind of outcome, the
//! same codes every command uses (README, "Exit codes").

/// Exit code of a bad setting (a value, a missing file).
pub const EX_USAGE: u8 = 64;
/// Exit code of something needed that is not available (an address already in use).
pub const EX_UNAVAILABLE: u8 = 69;

/// How `run` ended.
#[derive(Debug)]
pub enum Outcome {
    /// Stopped by a signal, or a hot restart asked for succeeded: exit 0.
    Done(Option<String>),
    /// A bad setting: exit [`EX_USAGE`].
    Usage(String),
    /// An address in use: exit [`EX_UNAVAILABLE`].
    Unavailable(String),
    /// A child failed, or a hot restart was refused: exit 1.
    Failed(String),
}

/// The outcome as one line (stdout for a hot restart's answer, stderr otherwise) and the
/// exit code of its kind.
pub fn exit_code(outcome: Outcome) -> std::process::ExitCode {
    use std::process::ExitCode;
    match outcome {
        Outcome::Done(message) => {
            if let Some(m) = message {
                println!("{m}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Usage(why) => {
            eprintln!("colyseus-envoy: invalid configuration: {why}");
            ExitCode::from(EX_USAGE)
        }
        Outcome::Unavailable(why) => {
            eprintln!("colyseus-envoy: not starting: {why}");
            ExitCode::from(EX_UNAVAILABLE)
        }
        Outcome::Failed(why) => {
            eprintln!("colyseus-envoy: {why}");
            ExitCode::FAILURE
        }
    }
}
