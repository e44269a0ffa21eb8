//! `wasm-trim IN OUT EXPORT...`: writes IN to OUT with only the named exports kept, and the
//! code they no longer reach removed.
//!
//! Why: a proxy-wasm host enters the VM for every exported callback of every stream, and skips
//! a callback the module does not export (the ABI allows it). The SDK exports them all; the
//! filter implements only a few. This is the optional size and speed step after `cargo build`
//! (scripts/build.sh --trim); the untrimmed module is the same filter. The wasm is read and
//! written by walrus, not by hand.

use std::process::ExitCode;

fn trim(input: &str, output: &str, keep: &[String]) -> Result<(), String> {
    let mut module = walrus::Module::from_file(input).map_err(|e| format!("{input}: {e}"))?;
    let unknown: Vec<&String> = keep.iter().filter(|name| module.exports.iter().all(|e| &e.name != *name)).collect();
    if !unknown.is_empty() {
        return Err(format!("{input} does not export {unknown:?}"));
    }
    let dropped: Vec<walrus::ExportId> =
        module.exports.iter().filter(|e| !keep.contains(&e.name)).map(|e| e.id()).collect();
    for id in dropped {
        module.exports.delete(id);
    }
    walrus::passes::gc::run(&mut module);
    module.emit_wasm_file(output).map_err(|e| format!("{output}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, keep @ ..] = args.as_slice() else {
        eprintln!("usage: wasm-trim IN OUT EXPORT...");
        return ExitCode::from(2);
    };
    match trim(input, output, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-trim: {e}");
            ExitCode::FAILURE
        }
    }
}
