//! Compiles the .proto files with protox (pure Rust): no protoc is needed.
fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["kpld.proto", "aggregation.proto", "kpl.proto"], ["proto"])
        .expect("the files in proto/ must compile");
    prost_build::Config::new()
        .bytes(["."])
        // The KPL's Configuration is large and sent once: boxed, so that every
        // result message is small.
        .boxed(".kpld.kpl_native.Message.body.configuration")
        .compile_fds(fds)
        .expect("prost-build must generate code for proto/");
}
