//! Checks a plugin configuration with the filter's own parser, natively:
//! `cargo run --example check_config -- config.json` exits 0 when the filter would accept
//! it, 1 with the field and reason on stderr when it would refuse it.

use std::process::ExitCode;

use jwt_claims_filter::config::FilterConfig;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check_config <config.json>");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    match FilterConfig::parse(&bytes) {
        Ok(config) => {
            println!("{path}: ok ({} rule(s))", config.rules.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
