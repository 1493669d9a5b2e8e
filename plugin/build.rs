//! Compiles plugin/proto/*.proto with protox (pure Rust; no protoc needed) into tonic/prost code in OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "goplugin.proto",
        "init.proto",
        "config.proto",
        "types.proto",
        "bundlepublisher.proto",
        "agentnodeattestor.proto",
        "servernodeattestor.proto",
        "agentkeymanager.proto",
        "serverkeymanager.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files.iter().map(|f| format!("proto/{f}")), ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
