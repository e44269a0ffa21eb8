//! `istio-envoy`: compiles Istio resources (Gateway, VirtualService, RequestAuthentication,
//! AuthorizationPolicy, ServiceEntry, DestinationRule, this filter's WasmPlugin) into
//!
//! - `--emit envoy`: an Envoy bootstrap that serves them with jwt-claims-filter, or
//! - `--emit istio`: manifests for a real Istio ingress gateway that behave the same, with
//!   claim conditions rewritten to the headers the filter writes.
//!
//! Anything it cannot compile faithfully is refused (exit 2) with the resource, the field and
//! the reason.

mod authz;
mod conditions;
mod envoy;
mod istio;
mod gateway;
mod model;
mod plugin;
mod routes;
mod upstreams;
mod yaml;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use model::{Refusal, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// An Envoy bootstrap serving the resources with the filter.
    Envoy,
    /// Istio manifests for an ingress gateway running the filter as a WasmPlugin.
    Istio,
}

/// Compile Istio resources for jwt-claims-filter.
#[derive(Debug, Parser)]
#[command(name = "istio-envoy", version)]
pub struct Cli {
    /// What to write to stdout.
    #[arg(long, value_enum, default_value = "envoy")]
    pub emit: Emit,
    /// Listen address for a Gateway server port: PORT=ADDR:PORT (default: the port on 127.0.0.1).
    #[arg(long = "bind", value_name = "PORT=ADDR:PORT")]
    pub binds: Vec<String>,
    /// Envoy's admin address.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// The filter module Envoy loads (--emit envoy).
    #[arg(long, value_name = "PATH", default_value = "wasm/jwt_claims_filter.wasm")]
    pub wasm: String,
    /// Where a destination or JWKS host lives, over ServiceEntries: HOST:PORT=ADDR:PORT.
    #[arg(long = "upstream", value_name = "HOST:PORT=ADDR:PORT")]
    pub upstreams: Vec<String>,
    /// Certificate and key for a Gateway server's tls.credentialName: CREDENTIAL=CERT.pem,KEY.pem.
    #[arg(long = "tls-cert", value_name = "CREDENTIAL=CERT,KEY")]
    pub tls_certs: Vec<String>,
    /// Istio YAML files or folders (multi-document YAML).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub inputs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(refusal) => {
            eprintln!("istio-envoy: {refusal}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<String, Refusal> {
    let mut resources: Vec<Resource> = Vec::new();
    for input in &cli.inputs {
        resources.extend(model::load(input)?);
    }
    compile(&resources, cli)
}

fn compile(resources: &[Resource], cli: &Cli) -> Result<String, Refusal> {
    for (i, r) in resources.iter().enumerate() {
        if resources[..i].iter().any(|o| o.kind == r.kind && o.name == r.name && o.namespace == r.namespace) {
            return Err(r.refuse("metadata.name", "is given twice"));
        }
    }
    match cli.emit {
        Emit::Envoy => envoy::emit(resources, cli),
        Emit::Istio => istio::emit(resources, cli),
    }
}

#[cfg(test)]
mod tests;
