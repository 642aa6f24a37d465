//! What every command does with its command line before running: the environment aliases
//! that let all commands read the scripts' variables, and parse errors that name the
//! variable the user set (not only the flag it feeds) and the form it expects.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Variables of `scripts/*.sh` and `run` that mean the same as an agent variable: set the
/// agent's one unless it is set itself, so `status`, `sync` and `bootstrap` all read them.
pub const ALIASES: &[(&str, &str)] = &[
    ("ADMIN_ADDR", "COLYSEUS_ENVOY_ADMIN_ADDR"),
    ("AGENT_API_ADDR", "COLYSEUS_ENVOY_API_ADDR"),
];

/// Applies [`ALIASES`] to this process's environment (children inherit it). Call before
/// any thread starts.
pub fn apply_aliases() {
    for (alias, name) in ALIASES {
        if std::env::var_os(name).is_none() {
            if let Some(v) = std::env::var_os(alias) {
                std::env::set_var(name, v);
            }
        }
    }
}

/// The variable the user set for `name`: its alias when that holds the same value.
fn user_variable(name: &str) -> String {
    let value = std::env::var_os(name);
    ALIASES
        .iter()
        .find(|(alias, n)| *n == name && value.is_some() && std::env::var_os(alias) == value)
        .map_or(name.to_owned(), |(alias, _)| (*alias).to_owned())
}

/// The flag's name (`--liveness-interval`) or, when the flag is not on the command line but
/// its variable is set, `VARIABLE=value`: what the user typed.
pub fn origin(argv: &[String], flag: &str, variable: &str) -> String {
    let on_cli = argv
        .iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    match std::env::var(variable) {
        Ok(v) if !on_cli => format!("{}={v}", user_variable(variable)),
        _ => flag.to_owned(),
    }
}

/// A parse error as one line, naming the variable when the bad value came from one, and
/// the expected form (the allowed values, or the default as an example).
pub fn explain(err: &clap::Error, cmd: &clap::Command, argv: &[String]) -> String {
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_owned();
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return first;
    }
    let Some(ContextValue::String(flag)) = err.get(ContextKind::InvalidArg) else {
        return first;
    };
    let long = flag.split_whitespace().next().unwrap_or(flag);
    let Some(arg) = find_arg(cmd, long.trim_start_matches("--")) else {
        return first;
    };
    let reason = rendered
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("': "))
        .map_or(String::new(), |(_, why)| why.to_owned());
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let expected = expected_form(arg);
    let who = match arg.get_env().and_then(|e| e.to_str()) {
        Some(var) => origin(argv, long, var),
        None => long.to_owned(),
    };
    let who = if who.contains('=') {
        format!("{who} (for {long})")
    } else {
        format!("{who} {value:?}")
    };
    let mut line = format!("{who} is not valid");
    if !reason.is_empty() {
        line.push_str(&format!(": {reason}"));
    }
    if !expected.is_empty() {
        line.push_str(&format!(" (expected {expected})"));
    }
    line
}

fn find_arg<'a>(cmd: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| cmd.get_subcommands().find_map(|s| find_arg(s, long)))
}

fn expected_form(arg: &clap::Arg) -> String {
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    if !values.is_empty() {
        return format!("one of {}", values.join(", "));
    }
    match arg.get_default_values().first().and_then(|v| v.to_str()) {
        Some(d) => format!("a value of the same form as the default, {d}"),
        None => String::new(),
    }
}

/// `what` prefixed with what the user set: the flag, or `VARIABLE=value` when it came from
/// the environment (a leading `flag ` in `what` is replaced, not repeated).
pub fn named(flag: &str, variable: &str, what: &dyn std::fmt::Display) -> String {
    let argv: Vec<String> = std::env::args().collect();
    let what = what.to_string();
    let what = what.strip_prefix(&format!("{flag} ")).unwrap_or(&what);
    format!("{}: {what}", origin(&argv, flag, variable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cmd() -> Command {
        Command::new("t")
            .arg(
                Arg::new("port")
                    .long("port")
                    .env("CLI_ENV_TEST_PORT")
                    .default_value("80")
                    .value_parser(clap::value_parser!(u16)),
            )
            .arg(
                Arg::new("mode")
                    .long("mode")
                    .value_parser(["even", "rooms"]),
            )
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable_and_the_form() {
        std::env::set_var("CLI_ENV_TEST_PORT", "abc");
        let args = argv(&["t"]);
        let err = cmd().try_get_matches_from(&args).unwrap_err();
        let line = explain(&err, &cmd(), &args);
        std::env::remove_var("CLI_ENV_TEST_PORT");
        assert!(
            line.starts_with("CLI_ENV_TEST_PORT=abc (for --port) is not valid: "),
            "{line}"
        );
        assert!(
            line.ends_with("(expected a value of the same form as the default, 80)"),
            "{line}"
        );
    }

    #[test]
    fn a_bad_flag_value_names_the_flag_and_the_allowed_values() {
        let args = argv(&["t", "--mode", "fair"]);
        let err = cmd().try_get_matches_from(&args).unwrap_err();
        let line = explain(&err, &cmd(), &args);
        assert_eq!(
            line,
            "--mode \"fair\" is not valid (expected one of even, rooms)"
        );
    }

    #[test]
    fn origin_prefers_the_command_line() {
        std::env::set_var("CLI_ENV_TEST_URL", "x");
        assert_eq!(
            origin(&argv(&["t"]), "--url", "CLI_ENV_TEST_URL"),
            "CLI_ENV_TEST_URL=x"
        );
        assert_eq!(
            origin(&argv(&["t", "--url=y"]), "--url", "CLI_ENV_TEST_URL"),
            "--url"
        );
        std::env::remove_var("CLI_ENV_TEST_URL");
        assert_eq!(origin(&argv(&["t"]), "--url", "CLI_ENV_TEST_URL"), "--url");
    }
}
