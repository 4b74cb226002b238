//! Generates the example event types with herald-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    herald_build::Builder::new()
        .include("proto")
        .compile(&["proto/acme/signup/v1/signup.proto"])?;
    Ok(())
}
