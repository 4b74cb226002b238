//! How every Herald tool reads a server address: `host:port`,
//! `http://host:port` and `https://host:port` all name a server, so a user
//! never has to guess which form a tool wants.

/// The URI for `endpoint`: unchanged when it has a scheme, `http://` in
/// front when it is a bare `host:port` (plaintext, as the quick start
/// serves).
///
/// ```
/// assert_eq!(herald::endpoint::uri("127.0.0.1:50051"), "http://127.0.0.1:50051");
/// assert_eq!(herald::endpoint::uri("https://herald:443"), "https://herald:443");
/// ```
pub fn uri(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::uri;

    #[test]
    fn bare_host_and_port_get_the_plaintext_scheme() {
        assert_eq!(uri("localhost:50051"), "http://localhost:50051");
        assert_eq!(uri("[::1]:50051"), "http://[::1]:50051");
        assert_eq!(uri(" 127.0.0.1:1 "), "http://127.0.0.1:1");
    }

    #[test]
    fn explicit_schemes_are_kept() {
        assert_eq!(uri("http://127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(uri("https://example.com:443"), "https://example.com:443");
    }
}
