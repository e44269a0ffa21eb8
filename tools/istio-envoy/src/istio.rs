pub fn emit(resources: &[crate::model::Resource], cli: &crate::Cli) -> crate::model::Result<String> { let _ = (resources, cli); Ok(String::new()) }
