fn main() {
    println!("picluster-node {} (placeholder)", env!("CARGO_PKG_VERSION"));
    // Keep the marker in the binary.
    std::hint::black_box(picluster_node::VERSION_MARKER);
}
