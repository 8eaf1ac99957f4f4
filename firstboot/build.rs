include!("source_id.rs");

fn main() {
    let here = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    emit_agent_source_id(here.parent().unwrap());
}
