//! One line per error for a person at a terminal: the error and its causes,
//! each said once. Error types here often name their cause in their own
//! message *and* return it as `source()` (so logs keep it), and transport
//! errors nest causes with the same text ("tcp connect error: tcp connect
//! error"), so printing the raw chain repeats itself.

use std::error::Error;

/// `error` and its causes joined by `: `, leaving out every cause whose text
/// the line already holds.
pub(crate) fn describe(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Layer {
                    text,
                    source: source.map(Box::new),
                })
            })
            .unwrap()
    }

    #[test]
    fn causes_already_in_the_message_are_said_once() {
        let error = chain(&[
            "cannot listen on 127.0.0.1:1: Address in use (os error 98); pass --listen",
            "Address in use (os error 98)",
        ]);
        assert_eq!(
            describe(&error),
            "cannot listen on 127.0.0.1:1: Address in use (os error 98); pass --listen"
        );
    }

    #[test]
    fn repeated_nested_causes_are_said_once_and_new_ones_kept() {
        let error = chain(&[
            "cannot reach a Herald server at http://127.0.0.1:1",
            "transport error",
            "tcp connect error",
            "tcp connect error",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            describe(&error),
            "cannot reach a Herald server at http://127.0.0.1:1: transport error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
